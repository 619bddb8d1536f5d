"""The README's first command, bounded: pings flow, bookings are matched and delivered, and every process
it started is gone after."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid

import psutil
import pytest

from core.config import Settings
from fleetstream.stack.services import port_open
from tests.conftest import REPO, start_group_at_end

pytestmark = pytest.mark.usefixtures("stack", "launcher")


def test_bounded_demo_run(stack: Settings) -> None:
    if port_open(stack.host, stack.api_port):
        pytest.skip(f"port {stack.api_port} is taken (a demo or API is already running here)")
    # Consumer groups of its own, starting at the topics' end: the demo's workers see its city,
    # not the records every earlier test left on the shared stack's topics.
    app_id = f"test-demo-{uuid.uuid4().hex[:8]}"
    for group in (app_id, f"{app_id}-store", f"{app_id}-agents"):
        asyncio.run(start_group_at_end(stack, group))
    before = {p.pid for p in psutil.process_iter()}
    out = subprocess.run(
        [sys.executable, "-m", "fleetstream.cli", "demo", "--duration", "60", "--drivers", "200"],
        cwd=REPO, capture_output=True, text=True, timeout=400, env={**os.environ, "FLEETSTREAM_APP_ID": app_id},
    )  # fmt: skip
    text = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
    assert out.returncode == 0, text[-4000:]
    summary = json.loads(re.search(r"summary (\{.*?\}) demo processes stopped", text).group(1))  # type: ignore[union-attr]
    assert summary["pings_processed"] > 0, summary
    # every device, every post; the message names the statuses/reasons (pytest shortens a dict)
    assert summary["pings_accepted"] == summary["pings_posted"] > 200 * 20, json.dumps(summary["http_errors"])
    assert summary["matched"] > 0 and summary["delivered"] > 0, summary
    assert summary["sockets_peak"] >= 200, summary  # each driver heard its offers on a socket
    assert not summary["http_errors"], summary
    assert "agents SDK: trips, harsh_braking" in text  # the built-in SDK agent and the example package's ran
    leftovers = [
        p.cmdline() for p in psutil.process_iter(["cmdline"])
        if p.pid not in before and "fleetstream.cli" in " ".join(p.info["cmdline"] or [])
    ]  # fmt: skip
    assert not leftovers, leftovers
