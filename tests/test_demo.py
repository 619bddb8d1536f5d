"""The README's first command, bounded: everything flows and every process it started is gone after."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from fleetstream.config import Settings
from fleetstream.stack.services import port_open
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("stack")


def test_bounded_demo_run(stack: Settings) -> None:
    if port_open(stack.host, stack.api_port):
        pytest.skip(f"port {stack.api_port} is taken (a demo or API is already running here)")
    before = {p.pid for p in psutil.process_iter()}
    out = subprocess.run(
        [sys.executable, "-m", "fleetstream.cli", "demo", "--duration", "3", "--drivers", "10"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
    assert out.returncode == 0, text[-4000:]
    assert "500 pings accepted (202)" in text  # 10 drivers x 5 batches x 10 pings
    assert "current for 10/10 drivers" in text
    assert "5 drivers): 250/250 pings" in text
    leftovers = [
        p.cmdline() for p in psutil.process_iter(["cmdline"])
        if p.pid not in before and "fleetstream.cli" in " ".join(p.info["cmdline"] or [])
    ]  # fmt: skip
    assert not leftovers, leftovers
