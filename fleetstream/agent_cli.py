"""``fleetstream agent``: list, scaffold and backtest stream agents (``streams.sdk``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from core.config import get_settings

agent_app = typer.Typer(no_args_is_help=True, help="Stream agents: your own, next to the built-in ones.")
console = Console()


@agent_app.command("list")
def list_agents() -> None:
    """Built-in agents and those installed through the ``fleetstream.agents`` entry point."""
    from streams.worker import AGENTS, SDK_AGENTS, sdk_agents

    table = Table("agent", "kind", "reads", "emits")
    for name in AGENTS:
        table.add_row(name, "built-in", "", "")
    for name, a in sdk_agents(get_settings()).items():
        kind = "built-in (SDK)" if name in SDK_AGENTS else "installed"
        table.add_row(name, kind, a.source.topic.name, f"{a.topic.name} ({a.output.__name__})")
    console.print(table)


def _when(text: str) -> datetime:
    """An ISO instant (with a timezone), or a duration back from now: ``2h``, ``30m``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no timezone (add Z or +02:00)")
    return when


@agent_app.command("backtest")
def backtest(
    name: str,
    start: Annotated[str, typer.Option("--from", help="ISO instant with a timezone, or 2h / 30m / 1d ago.")] = "1h",
    end: Annotated[str | None, typer.Option("--to", help="Same forms; default now.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write every emitted event here, one JSON per line.")] = None,
    max_records: Annotated[int | None, typer.Option(help="Stop after this many source records.")] = None,
    show: Annotated[int, typer.Option(help="Print this many emitted events.")] = 5,
) -> None:
    """Run an SDK agent (built-in or installed) over retained history: what it would have emitted (nothing
    live is touched)."""
    from streams.sdk.backtest import backtest as run
    from streams.worker import sdk_agents

    agents = sdk_agents(get_settings())
    if name not in agents:
        raise typer.BadParameter(f"no SDK agent {name!r}; there are: {sorted(agents) or 'none'}")
    t0, t1 = _when(start), _when(end) if end else datetime.now(UTC)
    report = asyncio.run(run(agents[name], get_settings(), t0, t1, max_records))
    console.print(f"agent {name}: {report.records:,} records of {agents[name].source.topic.name} "
                  f"from {t0.isoformat()} to {t1.isoformat()}; {report.skipped:,} skipped, "
                  f"{report.dead_letters:,} the handler raised on")  # fmt: skip
    console.print(f"emitted {len(report.emitted):,}: {report.by_type()}; counters {report.counts}")
    for e in report.emitted[:show]:
        console.print(e.model_dump_json())
    if out is not None:
        with out.open("wb") as f:
            for e in report.emitted:
                f.write(orjson.dumps(e.model_dump(mode="json")) + b"\n")
        console.print(f"wrote {out}")


TEMPLATE_PYPROJECT = """[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A Fleetstream stream agent"
requires-python = ">=3.11"
dependencies = ["fleetstream"]

[project.entry-points."fleetstream.agents"]
{name} = "{name}:agent"

[tool.setuptools]
packages = ["{name}"]
"""

TEMPLATE_AGENT = '''"""{name}: a Fleetstream stream agent (see docs/agents.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from schemas import TelemetryBatch, deterministic_event_id
from streams.sdk import TELEMETRY, Agent, Context

#: Speed above which a fix is reported, m/s.
LIMIT_MPS = 30.0


class Event(BaseModel):
    event_id: uuid.UUID
    type: Literal["agent.{name}"] = "agent.{name}"
    driver_id: str
    at: datetime
    speed_mps: float


agent: Agent[TelemetryBatch, Event] = Agent("{name}", TELEMETRY, Event, description="fixes above LIMIT_MPS")


@agent.handle
def on_batch(batch: TelemetryBatch, ctx: Context[Event]) -> None:
    for p in batch.pings:
        if p.speed_mps is not None and p.speed_mps > LIMIT_MPS:
            ctx.state["fast"] = ctx.state.get("fast", 0) + 1
            ctx.emit(Event(event_id=deterministic_event_id("{name}", p.driver_id, p.seq), driver_id=p.driver_id,
                           at=p.ts, speed_mps=p.speed_mps))
'''

TEMPLATE_TEST = '''"""{name}'s logic in memory: no servers."""

from {name} import LIMIT_MPS, agent
from streams.sdk.testing import Harness, track


def test_a_fast_fix_is_reported_once() -> None:
    h = Harness(agent)
    events = h.send(*track("d1", [(52.5, 13.4, LIMIT_MPS - 1), (52.5, 13.4, LIMIT_MPS + 1)]))
    assert [e.speed_mps for e in events] == [LIMIT_MPS + 1]
    assert h.replay(1) == events
    assert h.state("d1")["fast"] == 1
'''


@agent_app.command("new")
def new(
    name: str,
    directory: Annotated[Path, typer.Option("--dir", help="Where the package goes.")] = Path("."),
) -> None:
    """Scaffold an installable agent package: the agent, its test, and the entry point."""
    from schemas.base import IDENT_RE

    if not IDENT_RE.match(name) or not name.isidentifier():
        raise typer.BadParameter("a Python identifier of letters, digits and _ (it names a module and topics)")
    root = directory / name
    if root.exists():
        raise typer.BadParameter(f"{root} exists")
    (root / name).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(TEMPLATE_PYPROJECT.format(name=name, dist=name.replace("_", "-")))
    (root / name / "__init__.py").write_text(TEMPLATE_AGENT.replace("{name}", name))
    (root / "tests" / f"test_{name}.py").write_text(TEMPLATE_TEST.replace("{name}", name))
    console.print(f"created {root}: pip install -e {root}, then pytest {root}/tests; "
                  f"`fleetstream worker` runs it (`--agents …,{name}`)")  # fmt: skip
