"""The chaos benchmark, short, on the cluster profile: faults one after another under the phone-fleet load.

Three KRaft brokers (the stack's ``--profile cluster`` nodes, started by the benchmark when
down), two replicas of each API service behind nginx, two live workers in one group and
the store worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("stack", "launcher")


@pytest.mark.timeout(600)
def test_faults_under_load_lose_and_duplicate_nothing(stack: Settings, tmp_path: Path) -> None:
    """A worker added and removed; a live worker, API replicas and the busiest broker killed with -9; servers restarted.

    Phones resend what was not answered 202. Every fix answered 202 is in the history exactly
    once and every device's live state is its last accepted fix; after each fault every
    partition is processed again, and no process exited by itself (the run restarts one that
    does, as Kubernetes would, and reports it). Customers booking meanwhile heard every booking event
    stored for them once, their sockets reconnecting with after=. The servers are restarted
    only where this checkout started them (the benchmark reports the others skipped).
    """
    out_file = tmp_path / "chaos.json"
    args = ["--devices", "300", "--duration", "160", "--history-wait", "10", "--customers", "12",
            "--out", str(out_file)]  # fmt: skip
    env = {**os.environ, "FLEETSTREAM_KAFKA_PROFILE": "cluster"}
    run = subprocess.run([sys.executable, "-m", "benchmarks.chaos", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=540, env=env)  # fmt: skip
    assert out_file.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out_file.read_text())
    assert result["kafka"] == {"brokers": 3, "replicas": [3], "min_insync": 2}, result["kafka"]
    assert result["live_workers"] == 2
    for service in ("telemetry", "bookings", "auth", "notifications"):
        assert {f"{service}1", f"{service}2"} <= set(result["api_processes"]), result["api_processes"]
    assert result["pings_accepted"] > 300 * 10, result["loadgen"]
    checked = {k: result[k] for k in ("lost", "duplicated", "state_behind", "examples")}
    assert checked == {"lost": 0, "duplicated": 0, "state_behind": 0, "examples": {}}, (checked, result["faults"])
    assert result["crashed"] == [], result["crashed"]  # no process exited by itself: each fault was ridden out
    booked = result["booking_notifications"]  # customers' sockets, reconnecting with after= (an API replica killed)
    assert booked["bookings"] > 12 and booked["events_stored"] >= 1.5 * booked["bookings"], booked
    assert (booked["missed"], booked["repeated"], booked["examples"]) == (0, 0, {}), booked
    assert booked["events_heard"] == booked["events_stored"], booked
    late = [f for f in result["faults"] if "too late" in f.get("skipped", "")]
    assert not late, result["faults"]  # every fault was injected while the load ran
    done = {f["fault"]: f for f in result["faults"] if "skipped" not in f}
    assert set(done) >= {"scale", "worker", "api"}, result["faults"]
    for fault in done.values():
        assert fault["resumed_s"] is not None, fault  # every partition processed again after it
        assert fault["recovered_s"] is not None, fault  # and the lag came back down
    if "scale" in done:  # the added worker took partitions over; on SIGTERM it handed them back
        scale = done["scale"]
        assert scale["took_over_s"] is not None and len(scale["held"]) == 3 and min(scale["held"]) > 0, scale
        assert scale["handback_s"] is not None and len(scale["held_after"]) == 2, scale
    for fault in ("worker", "kafka"):  # the survivors took the dead one's partitions (or leaders)
        if fault in done:
            assert done[fault]["handover_s"] is not None, done[fault]
    assert result["lag_zero_after_load_s"] is not None, result
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
