"""The four API services as separate processes behind nginx, as the design deploys them.

Each serves only its routers and connects only to the servers it needs; nginx routes by path
to each one's upstream. With the bookings service killed, its paths answer a JSON 503 through
nginx while telemetry, accounts and notifications go on working; a client over its rate gets
a 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import websockets

from api.services import SERVICES
from core.config import Settings
from fleetstream.stack.nginx import render_conf
from tests.conftest import Proc, _status, bearer, free_port, register_and_login, wait_for

pytestmark = [
    pytest.mark.usefixtures("stack"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx binary on this machine"),
]


class Split:
    def __init__(self, stack: Settings, tmp: Path) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.procs: dict[str, Proc] = {}
        env = {
            "FLEETSTREAM_NOTIFY_HEARTBEAT_S": "0.5",
            "FLEETSTREAM_DEVICE_TOKEN_CACHE_S": "0",
            "FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000",
        }  # other tests fail logins from here too
        for name, port in self.ports.items():
            args = [sys.executable, "-m", "fleetstream.cli", "api", "--service", name, "--port", str(port)]
            self.procs[name] = Proc(args, env, tmp / f"api-{name}.log")
        nginx_port = free_port()
        front = stack.model_copy(update={"nginx_port": nginx_port, "nginx_client_rate": 5, "nginx_client_burst": 10})
        conf = tmp / "nginx.conf"
        conf.write_text(render_conf(front, tmp, tmp, {n: [f"127.0.0.1:{p}"] for n, p in self.ports.items()}))
        self.nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.url = f"http://127.0.0.1:{nginx_port}"
        for name, port in self.ports.items():
            ok = wait_for(lambda port=port: _status(f"http://127.0.0.1:{port}/readyz") == 200, 60, 0.3)  # type: ignore[misc]
            assert ok, self.procs[name].output()[-3000:]

    def stop(self) -> None:
        self.nginx.terminate()
        self.nginx.wait(10)
        for p in self.procs.values():
            p.stop()


@pytest.fixture(scope="module")
def split(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Split]:
    s = Split(stack, tmp_path_factory.mktemp("split"))
    try:
        yield s
    finally:
        s.stop()


def test_each_service_serves_its_routes_and_checks_only_its_servers(split: Split) -> None:
    direct = {name: f"http://127.0.0.1:{port}" for name, port in split.ports.items()}
    checks = {name: httpx.get(f"{url}/readyz", timeout=10).json()["checks"] for name, url in direct.items()}
    assert checks["telemetry"] == {"kafka": True, "redis": True, "mongodb": True}
    assert checks["auth"] == {"redis": True, "mongodb": True}  # no Kafka producer, no RabbitMQ connection
    assert checks["notifications"] == {"redis": True, "mongodb": True, "rabbitmq": True}
    assert httpx.get(f"{direct['telemetry']}/v1/bookings", timeout=10).status_code == 404  # not its router
    assert httpx.get(f"{direct['bookings']}/v1/drivers", timeout=10).status_code == 404
    paths = set(httpx.get(f"{direct['bookings']}/openapi.json", timeout=10).json()["paths"])
    assert "/v1/bookings" in paths and "/v1/telemetry" not in paths and "/v1/auth/login" not in paths


async def test_through_nginx_each_path_reaches_its_service_and_one_down_leaves_the_others(
    split: Split, stack: Settings
) -> None:
    from api.security import admin_token

    admin = bearer(admin_token(stack))
    async with httpx.AsyncClient(base_url=split.url, timeout=20) as c:
        driver = f"split-{uuid.uuid4().hex[:8]}"
        issued = await c.post(f"/v1/drivers/{driver}/devices", headers=admin)  # auth
        assert issued.status_code == 201, issued.text
        device = bearer(issued.json()["token"])

        async def ping(seq: int) -> httpx.Response:
            now = datetime.now(UTC).isoformat()
            return await c.post("/v1/telemetry", headers=device,
                                json={"pings": [{"seq": seq, "ts": now, "lat": 52.52, "lon": 13.40}]})  # fmt: skip

        assert (await ping(1)).status_code == 202  # telemetry
        email = f"{uuid.uuid4().hex[:8]}@split.example"
        tokens = await register_and_login(c, email, "correct horse 42")
        customer = bearer(tokens["access_token"])
        assert (await c.get("/v1/bookings", headers=customer)).status_code == 200  # bookings

        async def first_message() -> dict[str, object]:
            ws_url = split.url.replace("http", "ws") + f"/v1/notifications?token={tokens['access_token']}"
            async with websockets.connect(ws_url, open_timeout=10) as ws:  # notifications, upgraded by nginx
                return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

        assert (await first_message())["type"] == "subscribed"  # its live delivery has started

        split.procs["bookings"].stop(sig=9)  # kill -9: no goodbye
        down = await c.get("/v1/bookings", headers=customer)
        assert down.status_code == 503, down.text
        assert down.json() == {"detail": "the bookings service is unavailable: retry"}
        assert down.headers["retry-after"] == "5"
        assert (await c.get("/v1/zones", headers=admin)).status_code == 503
        # The other services keep working.
        assert (await ping(2)).status_code == 202
        assert (await c.get("/v1/auth/me", headers=customer)).status_code == 200
        assert (await first_message())["type"] == "subscribed"


def test_a_client_over_its_rate_gets_429_and_others_do_not(split: Split, stack: Settings) -> None:
    from api.security import admin_token

    with httpx.Client(base_url=split.url, timeout=20) as c:
        hammer = {"Authorization": "Bearer not-a-real-token"}
        codes = [c.get("/v1/auth/me", headers=hammer).status_code for _ in range(40)]
        assert codes.count(429) >= 20 and set(codes) <= {401, 429}, codes  # burst 10, then 5/s
        limited = c.get("/v1/auth/me", headers=hammer)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert "too many requests" in limited.json()["detail"]
        other = c.get("/v1/auth/me", headers=bearer(admin_token(stack)))  # another client: its own budget
        assert other.status_code != 429
        assert c.get("/healthz").status_code == 200  # probes are never limited
