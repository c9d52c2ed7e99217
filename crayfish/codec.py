"""Kafka payload codecs by name: how DataBatch / ScoredBatch travel as record values (+ headers).

Two codecs ship:

- ``protobuf`` (default, :mod:`crayfish.codec_protobuf`): the record value is the serialized
  ``crayfish.v1`` message; no headers.
- ``crayfish-json`` (:mod:`crayfish.codec_json`): byte-compatible with the original Crayfish
  message, so the original's Java producer and consumer can drive our workers. Ids and nanosecond
  stamps the original format has no room for travel in Kafka headers (``crayfish-*``); the
  original ignores headers.

Services ask for one with :func:`get_codec`. The interface (and how to add a codec) is in
:mod:`crayfish.codec_base`; :class:`Codec` and :class:`CodecError` are re-exported here.
"""

from __future__ import annotations

from crayfish.codec_base import Codec, CodecError, Headers
from crayfish.codec_json import CrayfishJsonCodec
from crayfish.codec_protobuf import ProtobufCodec

__all__ = ["Codec", "CodecError", "Headers", "ProtobufCodec", "CrayfishJsonCodec", "codecs", "get_codec"]

# One instance per codec, shared by the whole process (codecs are thread-safe).
CODECS: dict[str, Codec] = {c.name: c for c in (ProtobufCodec(), CrayfishJsonCodec())}


def codecs() -> dict[str, Codec]:
    """name -> codec instance."""
    return CODECS


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}") from None
