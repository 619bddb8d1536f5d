"""Accounts over real HTTP: register, login, JWT access, refresh rotation, rate limits, roles."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest

from core.config import Settings
from tests.conftest import Pipeline, bearer

pytestmark = pytest.mark.usefixtures("stack")
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(
        stack,
        tmp_path_factory.mktemp("accounts"),
        "test-accounts",
        FLEETSTREAM_LOGIN_MAX_FAILURES_PER_ACCOUNT="3",
        FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="1000",
        FLEETSTREAM_ACCESS_TOKEN_TTL_S="60",
    )
    yield from p.running(worker=False)


def register(c: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return c.post("/v1/auth/register", json={"email": email, "password": password, "name": "Ada"})


def login(c: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return c.post("/v1/auth/login", json={"email": email, "password": password})


def test_register_login_and_me(api: Pipeline, uid: str) -> None:
    with httpx.Client(base_url=api.url, timeout=20) as c:
        r = register(c, f"Ada.{uid}@Example.com")
        assert r.status_code == 201, r.text
        user = r.json()
        assert user["role"] == "customer" and user["email"] == f"ada.{uid}@example.com"
        assert "password_hash" not in user and "password" not in r.text
        assert register(c, f"ada.{uid}@example.com").status_code == 409  # unique email, case-insensitive

        tokens = login(c, f"ada.{uid}@example.com").json()
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 60
        claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
        assert claims["sub"] == user["id"] and claims["role"] == "customer" and claims["exp"] - claims["iat"] == 60
        me = c.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200 and me.json()["id"] == user["id"]


def test_bad_input_and_wrong_password_are_clear_errors(api: Pipeline, uid: str) -> None:
    with httpx.Client(base_url=api.url, timeout=20) as c:
        short = register(c, f"s.{uid}@example.com", password="short")
        assert short.status_code == 422 and "password" in short.text
        assert register(c, "not-an-email").status_code == 422
        assert c.post("/v1/auth/register", json={"email": f"x.{uid}@example.com", "password": PASSWORD, "name": "x",
                                                 "role": "admin"}).status_code == 422  # fmt: skip
        register(c, f"w.{uid}@example.com")
        wrong = login(c, f"w.{uid}@example.com", "wrong password!")
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong email or password"
        assert login(c, f"nobody.{uid}@example.com").status_code == 401  # same answer for unknown accounts


def test_forged_or_tampered_access_tokens_are_refused(api: Pipeline, uid: str) -> None:
    with httpx.Client(base_url=api.url, timeout=20) as c:
        register(c, f"t.{uid}@example.com")
        access = login(c, f"t.{uid}@example.com").json()["access_token"]
        claims = jwt.decode(access, options={"verify_signature": False})
        forged = jwt.encode({**claims, "role": "admin"}, "not-our-secret-but-long-enough-for-hs256!", algorithm="HS256")
        assert c.get("/v1/auth/me", headers=bearer(forged)).status_code == 401
        none_alg = jwt.encode({**claims, "role": "admin"}, None, algorithm="none")
        assert c.get("/v1/auth/me", headers=bearer(none_alg)).status_code == 401
        zone = {"name": "z", "circle": {"center": {"lat": 52.5, "lon": 13.4}, "radius_m": 100}}
        assert c.post("/v1/zones", json=zone, headers=bearer(access)).status_code == 403  # customers are not staff


def test_refresh_rotates_and_reuse_revokes_the_login(api: Pipeline, uid: str) -> None:
    with httpx.Client(base_url=api.url, timeout=20) as c:
        register(c, f"r.{uid}@example.com")
        first = login(c, f"r.{uid}@example.com").json()
        second = c.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200, second.text
        second_tokens = second.json()
        assert second_tokens["refresh_token"] != first["refresh_token"]
        assert c.get("/v1/auth/me", headers=bearer(second_tokens["access_token"])).status_code == 200

        # The first token again: someone copied it. Both it and its successor stop working.
        replay = c.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert replay.status_code == 401 and "already used" in replay.json()["detail"]
        assert c.post("/v1/auth/refresh", json={"refresh_token": second_tokens["refresh_token"]}).status_code == 401

        # Another login is a separate family, unaffected; logout revokes it.
        other = login(c, f"r.{uid}@example.com").json()
        assert c.post("/v1/auth/logout", json={"refresh_token": other["refresh_token"]}).status_code == 204
        assert c.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 401
        assert c.post("/v1/auth/refresh", json={"refresh_token": "fsr_nope.nope"}).status_code == 401


def test_login_is_rate_limited_per_account(api: Pipeline, uid: str) -> None:
    email = f"l.{uid}@example.com"
    with httpx.Client(base_url=api.url, timeout=20) as c:
        register(c, email)
        for _ in range(3):
            assert login(c, email, "wrong password!").status_code == 401
        limited = login(c, email)  # even the right password, until the window ends
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert login(c, f"other.{uid}@example.com").status_code == 401  # other accounts are not locked


def test_login_is_rate_limited_per_address(stack: Settings, tmp_path, uid: str) -> None:  # type: ignore[no-untyped-def]
    p = Pipeline(stack, tmp_path, "test-accounts-addr", FLEETSTREAM_LOGIN_MAX_ATTEMPTS_PER_ADDRESS="4")
    try:
        p.start_api()
        with httpx.Client(base_url=p.url, timeout=20) as c:
            # The counter is shared through Redis: start from a clean window for this address.
            import redis

            redis.Redis.from_url(stack.redis_dsn).delete("ratelimit:login:addr:127.0.0.1")
            codes = [login(c, f"a{i}.{uid}@example.com").status_code for i in range(6)]
            assert codes[:4] == [401] * 4 and codes[4:] == [429, 429]
            redis.Redis.from_url(stack.redis_dsn).delete("ratelimit:login:addr:127.0.0.1")
    finally:
        p.stop()


def test_admin_creates_staff_and_drivers_and_drivers_issue_their_own_device_tokens(api: Pipeline, uid: str) -> None:
    with httpx.Client(base_url=api.url, timeout=20) as c:
        admin = bearer(api.admin)
        body = {"email": f"drv.{uid}@example.com", "password": PASSWORD, "name": "Dee", "role": "driver"}
        assert c.post("/v1/users", json=body).status_code == 401
        driver = c.post("/v1/users", json=body, headers=admin).json()
        assert driver["role"] == "driver" and driver["driver_id"] == driver["id"]
        disp = c.post("/v1/users", json={**body, "email": f"disp.{uid}@example.com", "role": "dispatcher"},
                      headers=admin).json()  # fmt: skip
        register(c, f"cust.{uid}@example.com")

        d_access = bearer(login(c, body["email"]).json()["access_token"])
        mine = c.post(f"/v1/drivers/{driver['id']}/devices", headers=d_access)
        assert mine.status_code == 201, mine.text
        assert c.post(f"/v1/drivers/someone-else-{uid}/devices", headers=d_access).status_code == 403
        device = bearer(mine.json()["token"])
        assert c.post(f"/v1/drivers/{driver['id']}/devices", headers=device).status_code == 403

        c_access = bearer(login(c, f"cust.{uid}@example.com").json()["access_token"])
        assert c.post(f"/v1/drivers/{driver['id']}/devices", headers=c_access).status_code == 403
        assert c.get(f"/v1/drivers/{driver['id']}", headers=c_access).status_code == 403

        s_access = bearer(login(c, disp["email"]).json()["access_token"])
        assert c.get(f"/v1/drivers/{driver['id']}", headers=s_access).status_code in (200, 404)
        # A device token issued for an unknown driver id creates that driver's account.
        fresh = c.post(f"/v1/drivers/new-{uid}/devices", headers=s_access)
        assert fresh.status_code == 201
        # ...but never turns a customer account into a driver.
        cust_id = c.get("/v1/auth/me", headers=c_access).json()["id"]
        assert c.post(f"/v1/drivers/{cust_id}/devices", headers=admin).status_code == 409
