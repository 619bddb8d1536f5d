"""The worker is composed in one place, and importing a module does nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.config import Settings

ROOT = Path(__file__).resolve().parents[1]

#: Imports every product module with settings, Faust apps and agent registration refused.
IMPORT_ALL = """
import importlib, pkgutil
import faust
import core.config as config

def refuse(what):
    def fail(*args, **kwargs):
        raise AssertionError(what + " at import")
    return fail

config.get_settings = refuse("settings read")
config.Settings.__init__ = refuse("settings built")
faust.App.__init__ = refuse("a Faust app built")
imported = []
for package in ("core", "schemas", "sinks", "streams", "api", "fleetstream"):
    importlib.import_module(package)
    for m in pkgutil.walk_packages([package], prefix=package + "."):
        importlib.import_module(m.name)
        imported.append(m.name)
print(len(imported))
"""


def test_importing_any_product_module_builds_no_app_and_reads_no_settings() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 60  # every module was imported, not a few


def test_the_worker_installs_the_agents_it_lists_in_order() -> None:
    from streams.worker import AGENTS, build

    settings = Settings(app_id="compose-check", topic_namespace="compose")
    rt = build(settings, ["clean", "eta", "geofence", "store"])
    names = set(rt.app.agents)
    assert "streams.pipeline.telemetry" in names
    assert {"streams.store.store_pings", "streams.store.store_bookings"} <= names
    assert not any(n.startswith("streams.bookings") or n.startswith("streams.publish") for n in names)
    assert list(AGENTS)[:5] == ["clean", "eta", "publish", "driver_state", "geofence"]
    # A second worker in the same process is its own app: nothing leaked from the first.
    other = build(settings, ["bookings"])
    assert set(other.app.agents) == {"streams.bookings.run_bookings"}


def test_unknown_agent_names_are_refused() -> None:
    import pytest

    from streams.worker import build

    with pytest.raises(ValueError, match="unknown agents"):
        build(Settings(app_id="compose-check"), ["nope"])
