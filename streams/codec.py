"""The schemas codec registered with Faust, so an agent receives a decoded model.

Faust calls ``_loads`` once per record; ``schemas.decode`` validates the JSON
bytes straight into the right model (Rust-side), so there is no second parse.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from schemas import decode, encode

CODEC_NAME = "fleetstream"


class SchemaCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode(obj)

    def _loads(self, s: bytes) -> Any:
        return decode(s)


def register() -> None:
    codecs.register(CODEC_NAME, SchemaCodec())
