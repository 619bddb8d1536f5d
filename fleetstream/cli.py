"""``fleetstream``: the single entry point for the stack, the services and the tools."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.config import Settings, get_settings
from fleetstream.agent_cli import agent_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
stack_app = typer.Typer(no_args_is_help=True, help="The local service stack (no Docker needed).")
schemas_app = typer.Typer(no_args_is_help=True, help="Message schemas for device and app developers.")
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
deploy_app = typer.Typer(no_args_is_help=True, help="Deployment files (docker compose, Kubernetes).")
app.add_typer(deploy_app, name="deploy")
app.add_typer(agent_app, name="agent")
console = Console()

OnlyOpt = Annotated[list[str] | None, typer.Option("--only", help="Limit to these services.")]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="single (one Kafka node) or cluster: 3 KRaft brokers, topics at replication 3, "
        "min.insync.replicas 2 (the same as FLEETSTREAM_KAFKA_PROFILE=cluster).",
    ),
]


def _stack_settings(profile: str | None) -> Settings:
    if profile is None:
        return get_settings()
    if profile not in ("single", "cluster"):
        raise typer.BadParameter("single or cluster", param_hint="--profile")
    return Settings(kafka_profile=profile)  # the environment's other settings, and the profile's defaults


@stack_app.command("up")
def stack_up(only: OnlyOpt = None, profile: ProfileOpt = None) -> None:
    """Install what is missing, start every service on 127.0.0.1 and wait until each is healthy."""
    from fleetstream.stack import Stack
    from fleetstream.stack.services import StackError

    try:
        for line in Stack(_stack_settings(profile), only).up():
            console.print(line)
    except StackError as exc:
        console.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from exc


@stack_app.command("down")
def stack_down(only: OnlyOpt = None, profile: ProfileOpt = None) -> None:
    """Stop the processes `stack up` started (and nothing else)."""
    from fleetstream.stack import Stack

    for line in Stack(_stack_settings(profile), only).down():
        console.print(line)


@stack_app.command("status")
def stack_status(only: OnlyOpt = None, profile: ProfileOpt = None) -> None:
    """Each service with its port, pid and health; exit 1 if any is unhealthy."""
    from fleetstream.stack import Stack

    statuses = Stack(_stack_settings(profile), only).status()
    table = Table("service", "port", "pid", "state", "health", "log")
    for st in statuses:
        health = "[green]healthy[/green]" if st.healthy else "[red]down[/red]"
        log = Path(st.log)
        table.add_row(st.name, str(st.port), str(st.pid or "-"), st.state, health,
                      str(log.relative_to(Path.cwd())) if log.is_relative_to(Path.cwd()) else st.log)  # fmt: skip
    console.print(table)
    if not all(st.healthy for st in statuses):
        raise typer.Exit(1)


@app.command()
def topics() -> None:
    """Create the project's Kafka topics (explicit partitions, compaction where state needs it)."""
    from streams.topics import ensure_topics

    for line in asyncio.run(ensure_topics(get_settings())):
        console.print(line)


@app.command()
def worker(
    agents: Annotated[
        str | None,
        typer.Option(envvar="FLEETSTREAM_AGENTS", help="Comma-separated agents, built-in or installed (default: all)."),
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="Port of the worker's web server (/metrics).")] = None,
    app_id: Annotated[
        str | None, typer.Option(help="Consumer group / app id (default FLEETSTREAM_APP_ID); see ARCHITECTURE.md.")
    ] = None,
    loglevel: str = "info",
) -> None:
    """Run a Faust worker; start several with the same app id to share partitions.

    Give a subset of agents its own app id to run it as a separate consumer group, e.g.
    ``--agents store --app-id fleetstream-store``: a slow MongoDB then paces only that group.
    """
    import faust
    import mode.loop

    # uvloop, as the API runs: the worker's time goes largely to socket I/O (Kafka, Redis, RabbitMQ).
    mode.loop.use("uvloop")
    overrides: dict[str, object] = {}
    if app_id:
        overrides["app_id"] = app_id
    if web_port is not None:
        overrides["worker_web_port"] = web_port
    settings = get_settings().model_copy(update=overrides)  # handed down: nothing else reads the environment

    from core.runtime import tune_gc
    from streams.topics import ensure_changelogs, ensure_topics
    from streams.worker import build

    names = agents.split(",") if agents else None
    try:
        rt = build(settings, names)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--agents") from exc
    faust_app = rt.app
    console.print(f"worker {faust_app.conf.id}: agents {agents or 'all'}")
    changelogs = {t.changelog_topic.get_topic_name(): t.partitions for t in faust_app.tables.values()}
    with ThreadPoolExecutor(1) as pool:  # not on this thread: Faust's worker makes its loop here next
        pool.submit(asyncio.run, ensure_changelogs(changelogs, settings)).result()
        if rt.extra_topics:  # installed agents' own topics
            pool.submit(asyncio.run, ensure_topics(settings, rt.extra_topics)).result()
    sys.argv = sys.argv[:1]
    tune_gc()
    w = faust.Worker(faust_app, loglevel=loglevel)
    # Faust's terminal spinner sets the root logger to DEBUG (for loglevel >= warning), so
    # every Kafka send built a debug LogRecord: ~6 % of the worker's CPU under load.
    w.spinner = None
    w.execute_from_commandline()


@app.command()
def api(
    port: Annotated[int | None, typer.Option(help="Listen port (default FLEETSTREAM_API_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    service: Annotated[
        str | None,
        typer.Option(help="all, or some of auth, bookings, telemetry, notifications (comma-separated)."),
    ] = None,
) -> None:
    """Serve the HTTP and WebSocket API with uvicorn: every service, or only some (api/services.py)."""
    import os

    import uvicorn

    from api.services import chosen

    if service is not None:
        try:
            chosen(service)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--service") from exc
        # uvicorn builds the app from its factory, in each of its worker processes: the environment
        # is what reaches them all (as it does a Kubernetes pod's FLEETSTREAM_API_SERVICES).
        os.environ["FLEETSTREAM_API_SERVICES"] = service
        get_settings.cache_clear()
    s = get_settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=s.bind_host,
        port=port or s.api_port,
        workers=workers,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        ws=s.ws_impl,
        ws_per_message_deflate=s.ws_per_message_deflate,
        ws_max_size=s.ws_max_size,
        proxy_headers=True,
        forwarded_allow_ips=s.forwarded_allow_ips,
        # Longer than nginx keeps an idle upstream connection (60 s): the proxy, not the API,
        # closes idle ones, so nginx never sends a request on a connection being closed.
        timeout_keep_alive=75,
        # A request stuck on a dead server must not keep a stopping replica alive (uvicorn
        # waits for every open request by default): 10 s, well inside Kubernetes' 30 s grace.
        timeout_graceful_shutdown=10,
    )


@deploy_app.command("render")
def deploy_render() -> None:
    """Write the generated files of deploy/ (the nginx configurations, from api/services.py)."""
    from fleetstream.deploy import write

    for path in write():
        console.print(f"wrote {path}")


@schemas_app.command("export")
def schemas_export(directory: Path) -> None:
    """Write a JSON Schema file per message type into DIRECTORY."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")


@app.command()
def openapi(path: Annotated[Path, typer.Argument()] = Path("web/openapi.json")) -> None:
    """Write the API's OpenAPI document to PATH (the web UI's types are generated from it)."""
    from api.main import openapi_json

    path.write_text(openapi_json())
    console.print(f"wrote {path}")


@app.command()
def smoke(
    drivers: int = 20,
    batches: int = 5,
    timeout: float = 60.0,
    url: Annotated[str | None, typer.Option(help="API base URL (default: nginx of the local stack).")] = None,
) -> None:
    """Post simulated telemetry through the running API; print what reached Redis and MongoDB."""
    from fleetstream.smoke import run_smoke

    s = get_settings()
    base = url or f"http://{s.host}:{s.nginx_port}"
    if not asyncio.run(run_smoke(s, base, drivers=drivers, batches=batches, timeout=timeout, console=console)):
        raise typer.Exit(1)


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
    drivers: int = 200,
    bookings_per_min: Annotated[float, typer.Option(help="Bookings per simulated minute.")] = 20.0,
    pace: Annotated[
        float | None, typer.Option(help="Simulated seconds per second (default: 6 with --duration, else 1).")
    ] = None,
) -> None:
    """Start the stack, workers and the API; seed accounts and zones; drive a simulated city through it, live."""
    from fleetstream.demo import run_demo

    if not run_demo(get_settings(), duration, drivers, console, bookings_per_min, pace):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
