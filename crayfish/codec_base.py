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
4. Only if the codec's output records can lose the ids (a format whose ids ride outside the record
   value, as crayfish-json's Kafka headers, which third-party pipelines rarely copy): implement
   :meth:`Codec.input_fingerprint` and :meth:`Codec.output_echo_key`, and let :meth:`Codec.echo_key`
   compose the two. The generator writes the key of every batch into ``sent.parquet``
   (``echo_key``) and the collector matches an id-less output to the sent batch of the same key.
   A codec whose record value carries the ids (protobuf) keeps the defaults (None: no key, no cost).
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

    # -- matching outputs that lost their ids (see step 4 of the module docstring) -------------------
    # Extension point: the three methods below are the whole contract. The generator calls
    # input_fingerprint once per pool entry (outside the timed path) and echo_key once per sent batch;
    # the collector calls output_echo_key only for an output record that carried no batch id. Equal
    # keys on both sides mean "this output echoes that input"; a codec must make them equal for every
    # way a pipeline may re-print what it echoes.

    def input_fingerprint(self, batch: batch_pb2.DataBatch) -> str | None:
        """What an output record of this codec repeats of ``batch``'s data, as a short string, or
        None when the codec's outputs carry the ids themselves (no matching by echo needed)."""
        return None

    def echo_key(self, created_ns: int, fingerprint: str | None) -> str | None:
        """The key of a batch created at ``created_ns`` whose data has ``fingerprint`` (None: none)."""
        return None

    def output_echo_key(self, value: bytes) -> str | None:
        """The key of an output record from its value alone (equal to :meth:`echo_key` of the input it
        echoes), or None when the codec's outputs carry no echo. Raises :class:`CodecError` on a
        value it cannot read."""
        return None
