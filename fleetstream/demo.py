"""``fleetstream demo``: the whole platform on this machine, started by one command.

Starts the stack if needed, creates topics, runs the workers and the API as child
processes, seeds accounts and zones and runs the simulated city (``fleetstream.simulator``)
through the real API, with a live view of what flows. Ctrl-C (or ``--duration``) stops the
children it started and nothing else; a bounded run ends with a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from api.security import admin_token
from core.config import Settings
from fleetstream.simulator import Simulation, summary
from fleetstream.stack import Stack
from streams.topics import ensure_topics
from streams.worker import sdk_agents


class Children:
    """Child processes of the demo, each in its own group so that stopping them is exact."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.args: dict[str, tuple[str, ...]] = {}
        self.restarts: dict[str, int] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.args[name] = args
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"demo-{name}.log").open("ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "fleetstream.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )
        self.procs.append((name, p))
        return p

    def stop(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def dead(self) -> list[str]:
        return [n for n, p in self.procs if p.poll() is not None]

    def restart_dead(self, limit: int = 5) -> tuple[list[str], list[str]]:
        """Start again what exited, as Kubernetes would (a worker exits when an agent crashed).

        Returns the restarted names, and those that exited more than ``limit`` times (given up).
        """
        restarted, given_up = [], []
        for name in self.dead():
            if self.restarts.get(name, 0) >= limit:
                given_up.append(name)
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.procs = [(n, p) for n, p in self.procs if n != name]
            self.start(name, *self.args[name])
            restarted.append(name)
        return restarted, given_up


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def view(sim: Simulation, url: str) -> Table:
    st = summary(sim.stats)
    t = Table(title=f"Fleetstream demo — {url}/  (Ctrl-C stops)", show_header=False, expand=False)
    t.add_column(style="bold cyan")
    t.add_column()
    t.add_row("pings/s posted → processed", f"{sim.stats.posted_rate:,.0f} → {sim.stats.processed_rate:,.0f}")
    t.add_row("pings accepted / processed", f"{st['pings_accepted']:,} / {st['pings_processed']:,}")
    t.add_row("consumer lag (telemetry.raw)", f"{st['lag_records']:,} records")
    states = ", ".join(f"{k} {v}" for k, v in sorted(st["bookings_by_state"].items())) or "—"
    t.add_row("bookings by state", states)
    t.add_row("matched / offers / declined", f"{st['matched']} / {st['offers']} / {st['declined']}")
    t.add_row("mean pickup ETA at match", f"{st['mean_pickup_eta_s']} s")
    t.add_row("ETA error so far (MAE)", f"{st['eta_mae_s']} s learned vs {st['constant_speed_eta_mae_s']} s constant "
              f"({st['eta_predictions_checked']} predictions)")  # fmt: skip
    t.add_row("notification sockets", str(st["sockets"]))
    t.add_row("HTTP errors", str(st["http_errors"] or "none"))
    t.add_row("web UI", f"{url}/")
    if sim.dispatcher is not None:
        t.add_row("log in (dispatcher)", f"{sim.dispatcher.email} / {sim.password}")
        t.add_row("log in (a customer)", f"{sim.customers[0].email} / {sim.password}")
        t.add_row("log in (driver page)", f"{sim.human_driver} / {sim.password}")
    return t


async def simulate(settings: Settings, url: str, sim: Simulation, duration: float | None, console: Console,
                   children: Children) -> dict[str, object]:  # fmt: skip
    admin = {"Authorization": f"Bearer {admin_token(settings)}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        await sim.setup(c, admin)
        console.print(f"seeded {len(sim.device_tokens)} driver devices, a dispatcher, {len(sim.customers)} customers "
                      f"and zones; the world runs at {sim.pace:g}x")  # fmt: skip
        who = f"dispatcher {sim.dispatcher.email if sim.dispatcher else ''}, customer {sim.customers[0].email}"
        console.print(f"web UI: {url}/ — {who}, driver {sim.human_driver}; password {sim.password}")
        run = asyncio.create_task(sim.run(c, duration))

        async def watch_children() -> None:
            while not run.done():
                restarted, given_up = children.restart_dead()
                if restarted:
                    console.print(f"[yellow]restarted {restarted} (exited); logs in {settings.home / 'logs'}[/yellow]")
                if given_up:
                    console.print(
                        f"[red]demo processes keep exiting: {given_up}; logs in {settings.home / 'logs'}[/red]"
                    )
                    sim.stop()
                    return
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch_children())
        if console.is_terminal:
            with Live(view(sim, url), console=console, refresh_per_second=2) as live:
                while not run.done():
                    await asyncio.sleep(0.5)
                    live.update(view(sim, url))
        else:
            while not run.done():
                await asyncio.wait({run}, timeout=10)
                st = summary(sim.stats)
                console.print(f"t={st['seconds']}s processed {st['pings_processed']} pings, "
                              f"bookings {st['bookings_by_state']}")  # fmt: skip
        await run
        watcher.cancel()
    return summary(sim.stats)


def run_demo(settings: Settings, duration: float | None, drivers: int, console: Console,
             bookings_per_min: float = 20.0, pace: float | None = None) -> bool:  # fmt: skip
    """Everything a user needs to watch the platform work; True when pings, matches and deliveries all flowed."""
    for line in Stack(settings).up():
        console.print(f"[dim]stack[/dim] {line}")
    for line in asyncio.run(ensure_topics(settings)):
        console.print(f"[dim]topics[/dim] {line}")
    # Every simulated customer and driver logs in from this machine's address: the per-address
    # login limit (meant for guessing from one host) would refuse a demo started a few times.
    children = Children(settings.home / "logs", {"FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000000"})
    pace = pace if pace is not None else (6.0 if duration else 1.0)
    try:
        # Live path and MongoDB history in separate consumer groups: a slow store cannot delay live state.
        children.start("worker", "worker", "--agents", "clean,driver_state,geofence,publish,bookings,matching,eta")
        children.start("store", "worker", "--agents", "store", "--app-id", f"{settings.app_id}-store",
                       "--web-port", str(settings.worker_web_port + 1))  # fmt: skip
        # SDK agents (trips, and installed packages'): a consumer group of their own, so a slow one delays no other.
        if extra := list(sdk_agents(settings)):
            agents = ",".join(extra)
            port = str(settings.worker_web_port + 2)
            children.start("agents", "worker", "--agents", agents, "--app-id", f"{settings.app_id}-agents",
                           "--web-port", port)  # fmt: skip
            console.print(f"[dim]agents[/dim] SDK: {', '.join(extra)}")
        for i in range(settings.api_replicas):
            children.start(f"api-{i}", "api", "--port", str(settings.api_port + i))
        url = f"http://{settings.host}:{settings.nginx_port}"
        ready = _wait_http(f"{url}/readyz", 60) and _wait_http(
            f"http://{settings.host}:{settings.worker_web_port}/ready", 90
        )
        if not ready:
            console.print(f"[red]API or worker not ready; see {settings.home / 'logs'}/demo-*.log[/red]")
            return False
        console.print(f"API ready behind nginx at {url} (docs at {url}/docs)")
        sim = Simulation(settings, url, drivers, bookings_per_min, pace=pace, duration=duration)
        try:
            result = asyncio.run(simulate(settings, url, sim, duration, console, children))
        except KeyboardInterrupt:
            result = summary(sim.stats)
        console.print("summary " + json.dumps(result))
        ok = result["pings_processed"] > 0 and result["matched"] > 0 and result["delivered"] > 0  # type: ignore[operator]
        if duration is not None and not ok:
            console.print("[red]the demo did not show pings processed, bookings matched and delivered[/red]")
        return ok or duration is None
    except KeyboardInterrupt:
        return True
    finally:
        children.stop()
        console.print("demo processes stopped (the stack keeps running; `fleetstream stack down` stops it)")
