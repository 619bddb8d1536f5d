"""FastAPI dependencies: resources and the authenticated caller, checked per route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from api.resources import Resources
from api.security import Principal, bearer_token


async def get_resources(request: Request) -> Resources:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, a
    # hop that cost about a tenth of the API's CPU on the telemetry hot path.
    return request.app.state.resources


def bearer(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization", ""))


async def current_principal(request: Request, res: Annotated[Resources, Depends(get_resources)]) -> Principal:
    principal = await res.auth.authenticate(bearer(request))
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
        return principal

    return check


def can_read_driver(principal: Principal, driver_id: str) -> None:
    """Dispatchers and admins read every driver; a driver only itself."""
    if not principal.sees_all_drivers and principal.driver_id != driver_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a driver may only read its own data")


ResourcesDep = Annotated[Resources, Depends(get_resources)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(require("admin"))]
