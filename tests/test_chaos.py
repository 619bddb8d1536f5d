"""The chaos benchmark, short: faults one after another under the phone-fleet load, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("stack")


@pytest.mark.timeout(600)
def test_faults_under_load_lose_and_duplicate_nothing(stack: Settings, tmp_path: Path) -> None:
    """A live worker and an API replica killed with -9, Redis, RabbitMQ and MongoDB restarted.

    Phones resend what was not answered 202. Every fix answered 202 is in the history exactly
    once and every device's live state is its last accepted fix. The servers are restarted
    only where this checkout started the stack (the benchmark reports the others skipped).
    """
    out_file = tmp_path / "chaos.json"
    args = ["--devices", "300", "--duration", "80", "--history-wait", "10", "--out", str(out_file),
            "--faults", "worker,api,redis,rabbitmq,ferretdb"]  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "benchmarks.chaos", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=540)  # fmt: skip
    assert out_file.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out_file.read_text())
    assert result["pings_accepted"] > 300 * 10, result["loadgen"]
    checked = {k: result[k] for k in ("lost", "duplicated", "state_behind", "examples")}
    assert checked == {"lost": 0, "duplicated": 0, "state_behind": 0, "examples": {}}, (checked, result["faults"])
    done = [f for f in result["faults"] if "skipped" not in f]
    assert {f["fault"] for f in done} >= {"worker", "api"}, result["faults"]
    assert all(f["recovered_s"] is not None for f in done), result["faults"]  # the lag came back down
    assert result["lag_zero_after_load_s"] is not None, result
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
