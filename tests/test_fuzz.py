"""Schemathesis against the live API's OpenAPI document: no 5xx and no undocumented status, for every role.

Bounded: ``FUZZ_EXAMPLES`` generated requests per operation and role (default 12), so the
whole run takes a few minutes. Each case is sent once per caller: customer, driver device,
dispatcher, admin and no token at all. Found bugs are kept as hypothesis examples in the
test output; rerun with ``FUZZ_EXAMPLES=200`` for a deeper search.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from tests.conftest import Pipeline, bearer

pytestmark = pytest.mark.usefixtures("stack")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
ROLES = ("none", "customer", "driver", "dispatcher", "admin")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def fuzz_api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """An API with no worker: booking commands get 202 "pending" after a short wait instead of a verdict."""
    p = Pipeline(
        stack,
        tmp_path_factory.mktemp("fuzz"),
        f"test-fuzz-{uuid.uuid4().hex[:8]}",
        FLEETSTREAM_BOOKING_REPLY_TIMEOUT_S="0.05",
        FLEETSTREAM_READ_LIMIT="100000",
        FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="100000",
    )
    yield from p.running(worker=False)


@pytest.fixture(scope="module")
def tokens(fuzz_api: Pipeline) -> dict[str, dict[str, str]]:
    n = random.randrange(1 << 40)
    with httpx.Client(base_url=fuzz_api.url, timeout=20) as c:
        admin = bearer(fuzz_api.admin)
        cust = {"email": f"fuzz.c.{n}@example.com", "password": PASSWORD, "name": "Fuzz"}
        assert c.post("/v1/auth/register", json=cust).status_code == 201
        customer = c.post("/v1/auth/login", json={"email": cust["email"], "password": PASSWORD}).json()["access_token"]
        disp = {**cust, "email": f"fuzz.d.{n}@example.com", "role": "dispatcher"}
        assert c.post("/v1/users", json=disp, headers=admin).status_code == 201
        login = {"email": disp["email"], "password": PASSWORD}
        dispatcher = c.post("/v1/auth/login", json=login).json()["access_token"]
    return {
        "none": {},
        "customer": bearer(customer),
        "driver": bearer(fuzz_api.device_token(f"fuzz-{n}")),
        "dispatcher": bearer(dispatcher),
        "admin": admin,
    }


@pytest.mark.parametrize("role", ROLES)
def test_no_server_error_and_only_documented_statuses(
    role: str, tokens: dict[str, dict[str, str]], fuzz_api: Pipeline, tmp_path: Path
) -> None:
    """The schemathesis CLI (its pytest plugin does not load under pytest 9), bounded and seeded."""
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{fuzz_api.url}/openapi.json",
           "--checks", "not_a_server_error,status_code_conformance", "--max-examples", str(EXAMPLES),
           "--seed", "14", "--workers", "2", "--request-timeout", "30", "--suppress-health-check", "all",
           "--phases", "examples,coverage,fuzzing", "--continue-on-failure", "--no-color"]  # fmt: skip
    for name, value in tokens[role].items():
        cmd += ["--header", f"{name}: {value}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-12000:]
    assert "No issues found" in out or "passed" in out, out[-3000:]
