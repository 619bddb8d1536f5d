"""Data files shipped inside the package, found by path so that any layer can serve them."""

from pathlib import Path

#: The demo city's road graph (written by ``python -m fleetstream.city``; the API serves it).
CITY_JSON = Path(__file__).parent / "data" / "city.json"
