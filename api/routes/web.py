"""What the browser UI needs beyond the API: the demo city's roads, and the built pages themselves."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from api.models import City
from core.assets import CITY_JSON

router = APIRouter(tags=["web"])


@cache
def _city() -> bytes:
    return CITY_JSON.read_bytes()


@router.get("/v1/city", response_model=City)
async def city() -> Response:
    """The simulated city's road graph (nodes as [lat, lon], roads as [u, v, limit m/s]): the map's background
    when tiles cannot be fetched."""
    return Response(_city(), media_type="application/json", headers={"Cache-Control": "public, max-age=3600"})


def mount_pages(app: FastAPI, dist: Path) -> bool:
    """Serve the built UI (``web_dist``) at ``/`` when it exists; the API works without it."""
    if not (dist / "index.html").exists():
        return False
    app.mount("/", StaticFiles(directory=dist, html=True), name="web")
    return True
