"""Through nginx: one client's failing request never fails another client's request.

The API's MongoDB is a dead port, so every zone read fails after the driver's server
selection timeout while health checks keep being answered on the same upstream
keep-alive connections. Before ``api.errors.ErrorBarrier``, the failing request's
exception made uvicorn close its connection, nginx handed the next request to that
closed connection, and an unrelated client got a 502.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from fleetstream.stack.nginx import render_conf
from tests.conftest import Proc, _status, free_port, wait_for

pytestmark = [
    pytest.mark.usefixtures("stack"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx binary on this machine"),
]


async def test_a_failing_request_does_not_fail_another_clients_request(stack: Settings, tmp_path: Path) -> None:
    from api.security import admin_token

    api_port, nginx_port, dead = free_port(), free_port(), free_port()
    env = {"FLEETSTREAM_MONGO_URL": f"mongodb://127.0.0.1:{dead}/", "FLEETSTREAM_APP_ID": "test-nginx"}
    api = Proc([sys.executable, "-m", "fleetstream.cli", "api", "--port", str(api_port)], env, tmp_path / "api.log")
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_conf(stack.model_copy(update={"api_port": api_port, "api_replicas": 1,
                                                          "nginx_port": nginx_port}), tmp_path, tmp_path))  # fmt: skip
    args = ["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"]
    nginx = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    url = f"http://127.0.0.1:{nginx_port}"
    try:
        assert wait_for(lambda: _status(f"{url}/healthz") == 200, 60, 0.3), api.output()[-3000:]
        admin = {"Authorization": f"Bearer {admin_token(stack)}"}
        async with httpx.AsyncClient(base_url=url, timeout=30) as victim, httpx.AsyncClient(base_url=url) as others:

            async def failing() -> int:
                return (await victim.get("/v1/zones", headers=admin)).status_code

            async def healthy() -> list[int]:
                codes = []
                for _ in range(80):  # keeps nginx's upstream connections busy while the reads fail
                    codes += [r.status_code for r in await asyncio.gather(*(others.get("/healthz") for _ in range(8)))]
                    await asyncio.sleep(0.05)
                return codes

            fails, codes = await asyncio.gather(asyncio.gather(*(failing() for _ in range(4))), healthy())
            after = [(await others.get("/healthz")).status_code for _ in range(50)]
    finally:
        nginx.terminate()
        nginx.wait(10)
        api.stop()
    assert set(fails) == {503}, fails  # the unreachable server is named as such, with Retry-After
    assert set(codes) == {200} and set(after) == {200}, sorted(set(codes + after))
