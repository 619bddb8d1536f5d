"""A Python client generated from the OpenAPI document (openapi-python-client) works against the real API.

The generator runs in a virtualenv of its own (`.venv-tools`, made by `make test`): it pins an
older typer than the project's CLI uses. The generated package is imported from a temporary
directory; it posts a device's ping, reads the driver's state back and books a delivery, all
through its typed methods and models, on a real worker and API.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from core.config import Settings
from tests.conftest import Pipeline

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = Path(os.environ.get("FLEETSTREAM_CODEGEN", ROOT / ".venv-tools" / "bin" / "openapi-python-client"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    assert GENERATOR.exists(), f"{GENERATOR} is missing: `make test` installs it (make tools)"
    out = tmp_path_factory.mktemp("client")
    doc, target = str(ROOT / "web" / "openapi.json"), str(out / "fleetstream_client")
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", doc, "--meta", "none", "--output-path", target],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},  # its ruff post-hook
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("fleetstream_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == "fleetstream_client"]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A worker and an API of its own: other tests' failed logins from this address must not refuse its login."""
    p = Pipeline(stack, tmp_path_factory.mktemp("client-api"), f"test-client-{uuid.uuid4().hex[:8]}",
                 FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="1000", FLEETSTREAM_DEVICE_TOKEN_CACHE_S="0")  # fmt: skip
    yield from p.running()


def test_a_generated_client_posts_telemetry_and_books_a_delivery(generated: ModuleType, api: Pipeline) -> None:
    pipeline = api
    from fleetstream_client import AuthenticatedClient, Client
    from fleetstream_client.api.auth import login, register
    from fleetstream_client.api.bookings import create_booking, get_booking
    from fleetstream_client.api.devices import issue_device_token
    from fleetstream_client.api.drivers import get_driver
    from fleetstream_client.api.telemetry import post_telemetry
    from fleetstream_client.models import (
        Accepted,
        BookingIn,
        BookingPending,
        BookingView,
        DeviceTokenIssued,
        Login,
        PostedPing,
        Register,
        ServicePoint,
        TelemetryPost,
        Tokens,
        User,
    )

    def authed(token: str) -> AuthenticatedClient:
        return AuthenticatedClient(base_url=pipeline.url, token=token, raise_on_unexpected_status=True)

    driver = f"client-{uuid.uuid4().hex[:8]}"
    issued = issue_device_token.sync(driver, client=authed(pipeline.admin))
    assert isinstance(issued, DeviceTokenIssued) and issued.driver_id == driver

    now = datetime.now(UTC)
    ping = PostedPing(lat=52.5205, lon=13.4049, seq=int(now.timestamp() * 1000), ts=now, speed_mps=4.0)
    answer = post_telemetry.sync_detailed(client=authed(issued.token), body=TelemetryPost(pings=[ping]))
    assert answer.status_code == 202 and isinstance(answer.parsed, Accepted) and answer.parsed.accepted == 1

    # The worker makes it the driver's state; the typed answer carries the same fix.
    state = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = get_driver.sync(driver, client=authed(pipeline.admin))
        if state is not None and state.seq == ping.seq:
            break
        time.sleep(0.3)
    assert state is not None and state.seq == ping.seq and abs(state.lat - 52.5205) < 1e-6, state

    email = f"{uuid.uuid4().hex[:8]}@client.example"
    anonymous = Client(base_url=pipeline.url, raise_on_unexpected_status=True)
    user = register.sync(client=anonymous, body=Register(email=email, name="Typed", password="correct horse 42"))
    assert isinstance(user, User) and user.role == "customer"
    signed_in = login.sync_detailed(client=anonymous, body=Login(email=email, password="correct horse 42"))
    tokens = signed_in.parsed
    assert isinstance(tokens, Tokens), (signed_in.status_code, signed_in.content)

    customer = authed(tokens.access_token)
    order = BookingIn(pickup=ServicePoint(lat=52.52, lon=13.40), dropoff=ServicePoint(lat=52.51, lon=13.42))
    booked = create_booking.sync(client=customer, body=order, idempotency_key=uuid.uuid4().hex)
    assert isinstance(booked, (BookingView, BookingPending)), booked
    view = booked
    deadline = time.monotonic() + 30
    while not isinstance(view, BookingView) and time.monotonic() < deadline:  # 202: applied shortly
        time.sleep(0.3)
        view = get_booking.sync_detailed(str(booked.booking_id), client=customer).parsed
    assert isinstance(view, BookingView), view
    assert view.booking_id == booked.booking_id and view.customer_id == user.id
    assert view.status.value in {"requested", "offered", "assigned", "expired"}
