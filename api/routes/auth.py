"""Accounts: register, login, refresh, logout, who am I; admins create staff and driver accounts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from api.accounts import AccountError, Accounts, create_user, public
from api.deps import AdminDep, PrincipalDep, ResourcesDep
from api.models import Tokens, User
from api.responses import errors

router = APIRouter(tags=["auth"], responses=errors(401, 403, 409, 429))

Password = Annotated[str, Field(min_length=10, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Register(Strict):
    email: EmailStr
    password: Password
    name: Name


class NewUser(Register):
    role: Literal["customer", "driver", "dispatcher", "admin"]


class Login(Strict):
    email: EmailStr
    password: Annotated[str, Field(max_length=256)]


class RefreshIn(Strict):
    refresh_token: Annotated[str, Field(max_length=256)]


def _error(exc: AccountError) -> ORJSONResponse:
    return ORJSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _accounts(res: Any) -> Accounts:
    return res.accounts


@router.post("/v1/auth/register", status_code=201, response_model=User)
async def register(body: Register, res: ResourcesDep) -> Any:
    """Self-service sign-up creates a customer; staff and drivers are created by an admin."""
    try:
        return public(await create_user(res.db, body.email, body.password, body.name, "customer"))
    except AccountError as exc:
        return _error(exc)


@router.post("/v1/users", status_code=201, response_model=User)
async def create_account(body: NewUser, res: ResourcesDep, _: AdminDep) -> Any:
    try:
        return public(await create_user(res.db, body.email, body.password, body.name, body.role))
    except AccountError as exc:
        return _error(exc)


@router.post("/v1/auth/login", response_model=Tokens)
async def login(body: Login, request: Request, res: ResourcesDep) -> Any:
    """Access token (JWT, ``access_token_ttl_s``) and a refresh token; 429 with Retry-After when rate-limited."""
    address = request.client.host if request.client else "unknown"
    try:
        return (await _accounts(res).login(body.email, body.password, address)).body()
    except AccountError as exc:
        return _error(exc)


@router.post("/v1/auth/refresh", response_model=Tokens)
async def refresh(body: RefreshIn, res: ResourcesDep) -> Any:
    """Spends the refresh token and returns the next pair; a reused token revokes its whole login."""
    try:
        return (await _accounts(res).refresh(body.refresh_token)).body()
    except AccountError as exc:
        return _error(exc)


@router.post("/v1/auth/logout", status_code=204, response_class=Response)
async def logout(body: RefreshIn, res: ResourcesDep) -> Response:
    """Revokes the refresh token's whole login (every token rotated from it)."""
    try:
        await _accounts(res).logout(body.refresh_token)
    except AccountError as exc:
        return _error(exc)
    return Response(status_code=204)


@router.get("/v1/auth/me", response_model=User)
async def me(principal: PrincipalDep, res: ResourcesDep) -> Any:
    user = await res.db.users.find_one({"_id": principal.subject})
    if user is None:  # the admin token and device tokens have no user document of their own
        return {"id": principal.subject, "role": principal.role, "driver_id": principal.driver_id}
    return public(user)
