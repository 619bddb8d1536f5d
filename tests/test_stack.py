"""The launcher: health, idempotent ``up``, ``down`` that stops only its own processes."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from core.config import Settings
from fleetstream.stack import Stack
from fleetstream.stack.process import PidRecord
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.usefixtures("launcher")  # the launcher itself: tested where it is the run's servers


def test_every_service_is_healthy(stack: Settings) -> None:
    statuses = {s.name: s for s in Stack(stack).status()}
    assert set(statuses) >= {"kafka", "redis", "rabbitmq", "ferretdb", "nginx"}
    bad = {n: s for n, s in statuses.items() if not s.healthy}
    assert not bad, bad


def test_second_up_is_a_noop(stack: Settings) -> None:
    before = {s.name: s.pid for s in Stack(stack).status()}
    lines = Stack(stack).up()
    after = {s.name: s.pid for s in Stack(stack).status()}
    assert before == after
    assert not any("started" in line for line in lines), lines


def test_isolated_stack_up_twice_then_down(tmp_path: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    """A second, private Redis + nginx (own home and ports) proves up/down without touching the main stack."""
    api_port = free_port()
    s = Settings(home=tmp_path / "home", redis_port=free_port(), nginx_port=free_port(), api_port=api_port)
    st = Stack(s, only=["redis", "nginx"])
    st.up()
    first = {x.name: x for x in st.status()}
    assert all(x.healthy and x.state == "running" and x.pid for x in first.values()), first
    assert "already running on port" in " ".join(st.up())
    assert {x.name: x.pid for x in st.status()} == {n: x.pid for n, x in first.items()}

    # nginx proxies to the API replica it was configured with.
    api = spawn("api", "api", "--port", str(api_port))
    assert wait_for(lambda: _get(f"http://127.0.0.1:{api_port}/healthz") == 200, 30), api.output()
    r = httpx.get(f"http://127.0.0.1:{s.nginx_port}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"kafka": True, "redis": True, "mongodb": True, "rabbitmq": True}

    pids = [x.pid for x in first.values()]
    children = [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]
    st.down()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids + children)
    assert all(x.state == "stopped" and not x.healthy for x in st.status())
    assert PidRecord.read(s.home / "run" / "redis.pid") is None


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_failed_start_names_service_and_log(tmp_path: Path) -> None:
    from fleetstream.stack.services import StackError

    s = Settings(home=tmp_path / "home", redis_port=free_port())
    st = Stack(s, only=["redis"])
    st.services[0].command = lambda: (["redis-server", "--no-such-option", "1"], {})  # type: ignore[method-assign]
    with pytest.raises(StackError) as exc:
        st.up()
    assert "redis" in str(exc.value) and "redis.log" in str(exc.value)


def test_a_pid_record_knows_its_process_by_a_mark_no_clock_step_moves(tmp_path: Path) -> None:
    """The start mark is the kernel's start tick (psutil's create_time moved with a 9 s clock step)."""
    from fleetstream.stack.process import spawn, start_mark, stop_group

    rec = spawn(["sleep", "60"], tmp_path / "sleep.log")
    try:
        assert rec.alive()
        assert rec.create_time == start_mark(rec.pid) and rec.create_time < psutil.boot_time()  # ticks, not epoch
        assert not PidRecord(rec.pid, rec.create_time + 5).alive()  # another process under a reused pid
        rec.write(tmp_path / "x.pid")
        assert PidRecord.read(tmp_path / "x.pid") == rec
    finally:
        stop_group(rec, timeout=5)
    assert not rec.alive()
