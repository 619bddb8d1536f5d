"""Pid files that remember which processes the stack started, so ``down`` stops only those."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


def start_mark(pid: int) -> float:
    """When a process started, in a clock that no wall-clock step moves.

    On Linux its start in clock ticks since boot (``/proc/<pid>/stat``). psutil's
    ``create_time`` is boot time plus that, and the boot time it derives moves with the wall
    clock: after a 9 s clock step every server of the stack looked like someone else's
    ("external"), so ``down`` would not stop them and the restart tests skipped. Elsewhere,
    ``create_time``.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return psutil.Process(pid).create_time()
    return float(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the (comm) that may hold spaces


@dataclass(frozen=True)
class PidRecord:
    pid: int
    #: :func:`start_mark` of the process when it was started.
    create_time: float

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            pid, created = path.read_text().split()
            return cls(int(pid), float(created))
        except (OSError, ValueError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.pid} {self.create_time}\n")

    def alive(self) -> bool:
        """True only for the very process we started (guards against pid reuse)."""
        try:
            proc = psutil.Process(self.pid)
            return abs(start_mark(self.pid) - self.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, OSError, ValueError, IndexError):
            return False


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> PidRecord:
    """Start a server in its own session (process group) with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return PidRecord(proc.pid, start_mark(proc.pid))


def stop_group(record: PidRecord, timeout: float = 30.0) -> None:
    """SIGTERM the whole process group (servers fork helpers), then SIGKILL what is left."""
    if not record.alive():
        return
    try:
        pgid = os.getpgid(record.pid)
    except ProcessLookupError:
        return
    members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        os.killpg(pgid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=timeout)
    for p in alive:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
