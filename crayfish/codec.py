"""Kafka payload codecs: how DataBatch / ScoredBatch travel as record values (+ headers).

Two codecs ship:

- ``protobuf`` (default): the record value is the serialized ``crayfish.v1`` message; no headers.
- ``crayfish-json``: byte-compatible with the original Crayfish message, so the original's Java
  producer and consumer can drive our workers. Ids and nanosecond stamps the original format has no
  room for travel in Kafka headers (``crayfish-*``); the original ignores headers.

Adding a codec: subclass :class:`Codec`, give it a unique ``name`` and add it in :func:`codecs`.
Every method must raise :class:`CodecError` (never anything else) on bad input, so workers can
dead-letter the record with a reason and keep going.
"""

from __future__ import annotations

from typing import Sequence

from google.protobuf.message import DecodeError

from crayfish.v1 import batch_pb2

Headers = Sequence[tuple[str, bytes]]


class CodecError(ValueError):
    """A record value (or headers) that the codec cannot decode or encode."""


class Codec:
    name: str = ""

    def encode_batch(self, batch: batch_pb2.DataBatch) -> tuple[bytes, list[tuple[str, bytes]]]:
        raise NotImplementedError

    def decode_batch(self, value: bytes, headers: Headers | None = None) -> batch_pb2.DataBatch:
        raise NotImplementedError

    def encode_scored(self, scored: batch_pb2.ScoredBatch,
                      source: batch_pb2.DataBatch | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
        """``source`` is the input batch; codecs that echo the input (crayfish-json) need it."""
        raise NotImplementedError

    def decode_scored(self, value: bytes, headers: Headers | None = None) -> batch_pb2.ScoredBatch:
        raise NotImplementedError


class ProtobufCodec(Codec):
    name = "protobuf"

    def encode_batch(self, batch):
        return batch.SerializeToString(), []

    def decode_batch(self, value, headers=None):
        msg = batch_pb2.DataBatch()
        try:
            msg.ParseFromString(value)
        except (DecodeError, TypeError) as exc:
            raise CodecError(f"not a crayfish.v1.DataBatch: {exc}") from None
        return msg

    def encode_scored(self, scored, source=None):
        return scored.SerializeToString(), []

    def decode_scored(self, value, headers=None):
        msg = batch_pb2.ScoredBatch()
        try:
            msg.ParseFromString(value)
        except (DecodeError, TypeError) as exc:
            raise CodecError(f"not a crayfish.v1.ScoredBatch: {exc}") from None
        return msg


_CODECS: dict[str, Codec] = {}


def codecs() -> dict[str, Codec]:
    """name -> codec instance (built on first use, so codec modules may import this one)."""
    if not _CODECS:
        from crayfish.codec_json import CrayfishJsonCodec

        _CODECS.update({c.name: c for c in (ProtobufCodec(), CrayfishJsonCodec())})
    return _CODECS


def get_codec(name: str) -> Codec:
    known = codecs()
    try:
        return known[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(sorted(known))}") from None
