"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one."""

from __future__ import annotations

from pathlib import Path

import yaml

from streams.worker import AGENTS

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_consistent() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    api = {"api-telemetry", "api-bookings", "api-auth", "api-notifications"}
    assert {"kafka", "redis", "rabbitmq", "mongo", "nginx", "worker", "store", "topics", *api} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert source in doc.get("volumes", {}) or (ROOT / source).exists(), f"{name}: {vol}"
        cmd = svc.get("command", [])
        if svc.get("build") and cmd:
            assert cmd[0] in {"api", "worker", "topics"}, cmd
            if "--agents" in cmd:
                agents = cmd[cmd.index("--agents") + 1].split(",")
                assert set(agents) <= set(AGENTS), agents
    # Every agent runs somewhere.
    ran = {a for s in services.values() if "--agents" in s.get("command", [])
           for a in s["command"][s["command"].index("--agents") + 1].split(",")}  # fmt: skip
    assert ran == set(AGENTS)
