"""The local service stack for machines without Docker (``fleetstream stack up|down|status``)."""

from fleetstream.stack.manager import Stack

__all__ = ["Stack"]
