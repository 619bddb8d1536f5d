"""``up`` / ``down`` / ``status`` over the services, idempotent and pid-file based."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psutil

from core.config import Settings
from fleetstream.stack.process import PidRecord, spawn, stop_group
from fleetstream.stack.services import Service, StackError, all_services, port_open, quiet_client_logs, run


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    state: str  # "running" (ours), "external" (someone else's), "stopped"
    healthy: bool
    log: str


def _tail(path: os.PathLike[str] | str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_DAEMONS = {"epmd", "beam.smp", "redis-server", "nginx", "rabbitmq-server"}


def _stop_daemons_started_by_install(since: float) -> None:
    """Debian's maintainer scripts may start the servers they install (RabbitMQ's starts epmd);
    we run our own instances on our own data, so stop exactly those processes."""
    mine = os.getpid()
    for p in psutil.process_iter(["name", "create_time", "ppid"]):
        if p.info["name"] in _DAEMONS and p.info["create_time"] >= since - 1 and p.pid != mine:
            with contextlib.suppress(psutil.Error):
                p.terminate()
                p.wait(10)


class Stack:
    def __init__(self, settings: Settings, only: list[str] | None = None) -> None:
        quiet_client_logs()
        self.settings = settings
        self.services = [s for s in all_services(settings) if not only or s.name in only]

    # --- status
    def status_of(self, svc: Service) -> ServiceStatus:
        rec = PidRecord.read(svc.pid_file)
        ours = rec is not None and rec.alive()
        healthy = svc.healthy() if (ours or port_open(self.settings.host, svc.port)) else False
        state = "running" if ours else ("external" if healthy else "stopped")
        return ServiceStatus(svc.name, svc.port, rec.pid if ours and rec else None, state, healthy, str(svc.log_file))

    def status(self) -> list[ServiceStatus]:
        with ThreadPoolExecutor(len(self.services)) as pool:
            return list(pool.map(self.status_of, self.services))

    # --- up
    def _install(self, log: list[str]) -> None:
        missing = sorted({pkg for s in self.services for pkg in s.missing_apt_packages()})
        apt_log = self.settings.home / "logs" / "install-apt.log"
        if missing:
            if os.geteuid() != 0:
                raise StackError(
                    f"missing Debian packages {missing}: run as root or `apt-get install {' '.join(missing)}`"
                )
            log.append(f"apt-get install {' '.join(missing)}")
            t_install = time.time()
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            run(["apt-get", "update", "-q"], "apt-get update", apt_log, env=env)
            run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                "apt-get install",
                apt_log,
                env=env,
            )
            _stop_daemons_started_by_install(since=t_install)
        with ThreadPoolExecutor(len(self.services)) as pool:
            list(pool.map(lambda s: s.install(), self.services))

    def up(self, timeout_scale: float = 1.0) -> list[str]:
        """Start what is not running and wait until every service answers its probe."""
        t0 = time.monotonic()
        log: list[str] = []
        for d in ("logs", "run", "data", "cache"):
            (self.settings.home / d).mkdir(parents=True, exist_ok=True)
        current = {st.name: st for st in self.status()}
        todo = [s for s in self.services if current[s.name].state == "stopped"]
        for s in self.services:
            st = current[s.name]
            if st.state == "running" and not st.healthy:
                todo.append(s)  # ours but not answering: wait for it below, do not start a second one
            elif st.state != "stopped":
                log.append(f"{s.name}: already {st.state} on port {s.port}")
        if todo:
            self._install(log)
        started: list[Service] = []
        for svc in todo:
            if current[svc.name].state == "stopped":
                svc.prepare()
                args, env = svc.command()
                rec = spawn(args, svc.log_file, env=env)
                rec.write(svc.pid_file)
                started.append(svc)
                if svc.name == "epmd":  # RabbitMQ registers with it at boot
                    self._wait([svc], timeout_scale)
        self._wait(todo, timeout_scale)
        for svc in started:
            log.append(f"{svc.name}: started on port {svc.port}")
        log.append(f"stack up in {time.monotonic() - t0:.1f}s")
        return log

    def _wait(self, services: list[Service], timeout_scale: float) -> None:
        def wait_one(svc: Service) -> str | None:
            deadline = time.monotonic() + svc.start_timeout * timeout_scale
            while time.monotonic() < deadline:
                rec = PidRecord.read(svc.pid_file)
                if rec is not None and not rec.alive():
                    return f"{svc.name} exited during start-up; log {svc.log_file}:\n{_tail(svc.log_file)}"
                if svc.healthy():
                    return None
                time.sleep(0.3)
            waited = svc.start_timeout * timeout_scale
            return f"{svc.name} did not become healthy in {waited:.0f}s; log {svc.log_file}:\n{_tail(svc.log_file)}"

        if not services:
            return
        with ThreadPoolExecutor(len(services)) as pool:
            errors = [e for e in pool.map(wait_one, services) if e]
        if errors:
            raise StackError("\n\n".join(errors))

    # --- down
    def down(self) -> list[str]:
        """Stop only processes whose pid files we wrote, RabbitMQ before epmd."""
        log = []
        for svc in reversed(self.services):
            rec = PidRecord.read(svc.pid_file)
            if rec is None:
                continue
            if rec.alive():
                stop_group(rec)
                log.append(f"{svc.name}: stopped (pid {rec.pid})")
            svc.pid_file.unlink(missing_ok=True)
        return log or ["nothing of ours was running"]
