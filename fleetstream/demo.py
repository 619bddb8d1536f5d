"""``fleetstream demo``: the whole platform on this machine, started by one command.

Starts the stack if needed, creates topics, runs a worker and the API as child
processes, pushes simulated telemetry through and reports what flowed. Ctrl-C
(or ``--duration``) stops the children it started and nothing else.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console

from fleetstream.config import Settings
from fleetstream.smoke import run_smoke
from fleetstream.stack import Stack
from streams.topics import ensure_topics


class Children:
    """Child processes of the demo, each in its own group so that stopping them is exact."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"demo-{name}.log").open("ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "fleetstream.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
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


def run_demo(settings: Settings, duration: float | None, drivers: int, console: Console) -> bool:
    for line in Stack(settings).up():
        console.print(f"[dim]stack[/dim] {line}")
    for line in asyncio.run(ensure_topics(settings)):
        console.print(f"[dim]topics[/dim] {line}")
    children = Children(settings.home / "logs")
    try:
        # Live path and MongoDB history in separate consumer groups: a slow store cannot delay live state.
        children.start("worker", "worker", "--agents", "clean,driver_state,geofence,publish,bookings,matching,eta")
        children.start("store", "worker", "--agents", "store", "--app-id", f"{settings.app_id}-store",
                       "--web-port", str(settings.worker_web_port + 1))  # fmt: skip
        for i in range(settings.api_replicas):
            children.start(f"api-{i}", "api", "--port", str(settings.api_port + i))
        url = f"http://{settings.host}:{settings.nginx_port}"
        if not _wait_http(f"{url}/readyz", 60):
            console.print(f"[red]API not ready; see {settings.home / 'logs'}/demo-api-0.log[/red]")
            return False
        console.print(f"API ready behind nginx at {url} (docs at {url}/docs)")
        ok = asyncio.run(run_smoke(settings, url, drivers=drivers, batches=5, timeout=90, console=console))
        deadline = None if duration is None else time.monotonic() + duration
        console.print("running; Ctrl-C stops the demo" if deadline is None else f"running for {duration:.0f}s")
        while deadline is None or time.monotonic() < deadline:
            if dead := children.dead():
                console.print(f"[red]demo processes exited: {dead}; logs in {settings.home / 'logs'}[/red]")
                return False
            time.sleep(0.5)
        return ok
    except KeyboardInterrupt:
        return True
    finally:
        children.stop()
        console.print("demo processes stopped (the stack keeps running; `fleetstream stack down` stops it)")
