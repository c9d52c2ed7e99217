"""What every Kafka payload codec is: the :class:`Codec` interface and its one error type.

A codec turns a ``crayfish.v1.DataBatch`` (the generator's input record) and a
``crayfish.v1.ScoredBatch`` (the worker's output record) into a Kafka record value plus headers,
and back. The registry of codecs by name is :mod:`crayfish.codec`.

Adding a codec
--------------
1. Subclass :class:`Codec` in a module of its own (``crayfish/codec_<name>.py``), with a unique
   ``name``: the string experiments and settings use (``codec: <name>``).
2. Implement the four methods. Every one of them must raise :class:`CodecError`, never anything
   else, on input it cannot handle: workers dead-letter the record with that reason and keep going.
   Headers are ``(str, bytes)`` pairs (what confluent-kafka gives and takes); return ``[]`` when
   the codec has none.
3. Add an instance to ``CODECS`` in :mod:`crayfish.codec`, and round-trip and error cases to
   ``tests/unit/crayfish/test_codec.py``.
"""

from __future__ import annotations

from typing import Sequence

from crayfish.v1 import batch_pb2

Headers = Sequence[tuple[str, bytes]]


class CodecError(ValueError):
    """A record value (or headers) that the codec cannot decode or encode."""


class Codec:
    """How DataBatch / ScoredBatch travel as Kafka record values (+ headers)."""

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
