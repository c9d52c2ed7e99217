"""``crayfish-json``: the original Crayfish (Java, Jackson) Kafka message, byte for byte.

The compatibility contract
--------------------------
The original Crayfish producer writes one compact JSON object per record (no spaces), keys in this
order::

    {"creationTimestamp":1700000000123,"dataPointSz1":2,"dataPointSz2":3,
     "dataPoint":"0.1,1.0,-2.5,1.0E-5,1.2345678E7,0.0,","prediction":null}

- ``creationTimestamp``: wall clock in milliseconds since the epoch (Java ``long``).
- ``dataPointSz1``: batch size (rows); ``dataPointSz2``: values per row.
- ``dataPoint``: all ``Sz1 * Sz2`` values in row-major order, each printed with Java's
  ``Float.toString`` and *followed* by a comma (so a non-empty list ends with ``,``).
- ``prediction``: ``null`` on the input topic; on the output topic the model output reshaped to
  ``(rows, -1)`` printed as Java's ``ArrayList<ArrayList<Float>>.toString()``:
  ``"[[0.1, 0.9], [0.7, 0.3]]"`` (``", "`` separators, same float formatting). The output record
  echoes the input's ``creationTimestamp``, sizes and ``dataPoint``.

Floats are printed the way JDK 19+ ``Float.toString`` prints them (the port is
:mod:`crayfish.java_float`, which documents the rules and how it was checked against a JVM).

Where we deviate (on purpose, or because the format has no room)
----------------------------------------------------------------
- Everything the format cannot hold travels in Kafka headers, which the original ignores:
  ``crayfish-batch-id``, ``crayfish-run-id``, ``crayfish-sequence``, ``crayfish-intended-ns``,
  ``crayfish-created-ns``, ``crayfish-model`` and ``crayfish-shape`` (the input tensor's exact
  shape, e.g. ``1,1,784``; empty for a 0-d tensor), plus one ``crayfish-attr-<key>`` header per
  batch attribute. Integers are ASCII decimal, strings UTF-8. On output records also
  ``crayfish-input-append-ms`` (ASCII int) and ``crayfish-facts`` (the ``crayfish.v1.ScoringFacts``
  message, serialized protobuf bytes). When a header occurs twice the last one wins.
- Decoding re-imposes the header's shape when its element count matches ``Sz1 * Sz2``; otherwise
  (or without the header, as the original producer writes it) the input is ``(Sz1, Sz2)``. Without
  headers ``created_ns = creationTimestamp * 1_000_000`` and ids / model are empty (the worker fills
  defaults). A decoded prediction is always ``(rows, cols)`` float32; ``"[]"`` decodes to ``(0, 0)``.
- Only float32 inputs can be encoded (the format carries Java floats; anything else raises
  :class:`CodecError`). Outputs of another numeric dtype are cast to float32 for printing, as the
  original did when it filled its ``ArrayList<Float>``.
- JDK 8..18 ``Float.toString`` sometimes printed more digits than the shortest (e.g.
  ``9.9999998E10`` for ``1.0E11``; see :mod:`crayfish.java_float`). Such records decode to the same
  float32 values, but our re-encoding is the JDK 19+ form, so it is not byte-identical to what
  that JVM wrote.
- Decoding is lenient where it costs nothing: whitespace around values, a missing final comma,
  ``nan`` / ``inf`` spellings and a missing ``prediction`` key on inputs are accepted. Parsing a
  decimal goes through float64 before float32 (numpy); for the <= 9-digit strings Java prints this
  gives the float32 back exactly.
- ``encode_scored`` echoes the input's ``dataPoint`` text exactly as it was received when the source
  batch is one this codec decoded (and its tensor is unchanged): like the original, which kept the
  string, it then costs a copy, not a re-format.

Matching an output that lost its headers (the echo key)
-------------------------------------------------------
A pipeline of someone else's (the original Crayfish jobs, most Flink / Spark / Kafka Streams jobs)
writes the output value and drops the input's headers, so our ids and ns stamps are gone. What
survives is the echo: ``creationTimestamp`` and the ``dataPoint`` data. :func:`echo_key` makes a key
of the two — ``"<creationTimestamp ms>:<fingerprint>"`` where the fingerprint (:func:`data_fingerprint`)
hashes ``dataPointSz1``, ``dataPointSz2`` and the *decoded float32 values* (never the text: a
pipeline that re-prints ``1.0`` as ``1`` or ``1.0E-5`` as ``1e-05`` still matches; -0.0 counts as 0.0
and every NaN as one NaN). The generator computes it for every batch it sends
(:meth:`CrayfishJsonCodec.input_fingerprint` once per pool entry, :meth:`~CrayfishJsonCodec.echo_key`
per batch) into ``sent.parquet``; the collector computes it from an output value
(:meth:`~CrayfishJsonCodec.output_echo_key`) and assigns the output to the sent batch of that key
(``services.collector.batches``). Two batches built in the same millisecond from the same data have
the same key; they are told apart by order only (documented there).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import OrderedDict

import numpy as np

from crayfish.codec_base import Codec, CodecError
from crayfish.codec_json_headers import (INT64, batch_headers, fill_ids, fill_output_stamps, header_shape,
                                         headers_dict, scored_headers)
from crayfish.java_float import java_float_csv, java_float_strings
from crayfish.tensor import TensorError, from_tensor, to_tensor
from crayfish.v1 import batch_pb2, tensor_pb2

_JAVA_INT_MAX = (1 << 31) - 1

# ---------------------------------------------------------------------------------------------
# The dataPoint and prediction texts
# ---------------------------------------------------------------------------------------------

def format_data_point(values: np.ndarray) -> str:
    """The ``dataPoint`` text: ``Float.toString`` of every value (C order), each followed by ','."""
    return java_float_csv(values)


def format_prediction(output: np.ndarray) -> str:
    """Java ``ArrayList<ArrayList<Float>>.toString()`` of ``output`` reshaped to ``(rows, -1)``."""
    arr = np.asarray(output)
    rows = arr.shape[0] if arr.ndim >= 1 else 1
    cols = int(np.prod(arr.shape[1:], dtype=np.int64)) if arr.ndim >= 1 else 1
    strs = java_float_strings(arr)
    return "[" + ", ".join(
        "[" + ", ".join(strs[r * cols:(r + 1) * cols]) + "]" for r in range(rows)) + "]"


def parse_data_point(text: str, count: int) -> np.ndarray:
    """Exactly ``count`` float32 values from a ``dataPoint`` string (``"v,v,...,v,"``)."""
    if not isinstance(text, str):
        raise CodecError(f"dataPoint must be a string, got {type(text).__name__}")
    body = text if text.endswith(",") or not text else text + ","
    # A trailing sentinel value: any unparsable character stops numpy's parser (older numpy) or
    # raises (numpy >= 2.x), so a well-formed body yields exactly count + 1 values.
    try:
        values = np.fromstring(body + "0", dtype=np.float32, sep=",")
    except (ValueError, DeprecationWarning) as exc:
        raise CodecError(f"dataPoint holds a non-numeric value: {exc}") from None
    if values.size != count + 1:
        got = body.count(",")
        raise CodecError(
            f"dataPoint has {got} values (or a non-numeric one), dataPointSz1 * dataPointSz2 = {count}")
    return values[:count]


_ROW_SPLIT = re.compile(r"\]\s*,\s*\[")


def parse_prediction(text: str) -> np.ndarray:
    """Inverse of :func:`format_prediction`: a float32 ``(rows, cols)`` array."""
    if not isinstance(text, str):
        raise CodecError(f"prediction must be a string, got {type(text).__name__}")
    s = text.strip()
    if len(s) < 2 or s[0] != "[" or s[-1] != "]":
        raise CodecError(f"prediction is not a list of lists: {text[:60]!r}")
    inner = s[1:-1].strip()
    if not inner:
        return np.zeros((0, 0), dtype=np.float32)
    if inner[0] != "[" or inner[-1] != "]":
        raise CodecError(f"prediction is not a list of lists: {text[:60]!r}")
    rows = _ROW_SPLIT.split(inner[1:-1])
    parsed = []
    for r, row in enumerate(rows):
        if "[" in row or "]" in row:
            raise CodecError(f"prediction row {r} is malformed: {row[:60]!r}")
        row = row.strip()
        if not row:
            parsed.append(np.zeros(0, dtype=np.float32))
            continue
        try:
            parsed.append(np.array(row.split(","), dtype=np.float32))
        except ValueError as exc:
            raise CodecError(f"prediction row {r} holds a non-numeric value: {exc}") from None
    widths = {p.size for p in parsed}
    if len(widths) != 1:
        raise CodecError(f"prediction rows differ in length: {sorted(widths)}")
    return np.stack(parsed)


# ---------------------------------------------------------------------------------------------
# The echo key (module docstring, "Matching an output that lost its headers")
# ---------------------------------------------------------------------------------------------

def data_fingerprint(rows: int, cols: int, values: np.ndarray) -> str:
    """A short hash of a ``dataPoint``: its sizes and its values as float32 (C order), with -0.0
    folded into 0.0 and every NaN into one NaN, so that any printing of the same floats agrees."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    v = np.where(np.isnan(v), np.float32(np.nan), v + np.float32(0.0))  # x + 0.0: -0.0 becomes 0.0
    h = hashlib.blake2b(f"{int(rows)}x{int(cols)};".encode("ascii"), digest_size=12)
    h.update(v.astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def echo_key(creation_ms: int, fingerprint: str) -> str:
    """The key both sides compute: ``"<creationTimestamp>:<data fingerprint>"``."""
    return f"{int(creation_ms)}:{fingerprint}"


# ---------------------------------------------------------------------------------------------
# JSON document
# ---------------------------------------------------------------------------------------------

def _document(creation_ms: int, sz1: int, sz2: int, data_point: str, prediction: str | None,
              trusted: bool = True) -> bytes:
    """The record value. ``trusted``: ``data_point`` is our own output (digits, '.', 'E', '-', ',',
    letters), which needs no JSON escaping. Echoed text passed numpy's parser, so besides such
    characters it can only hold whitespace; only control whitespace needs escaping."""
    if not trusted and any(c in data_point for c in "\t\n\r\x0b\x0c"):
        dp = json.dumps(data_point)
    else:
        dp = '"' + data_point + '"'
    pred = "null" if prediction is None else '"' + prediction + '"'
    return (f'{{"creationTimestamp":{int(creation_ms)},"dataPointSz1":{int(sz1)},"dataPointSz2":{int(sz2)},'
            f'"dataPoint":{dp},"prediction":{pred}}}').encode("ascii")


def _parse_document(value) -> dict:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if not isinstance(value, (bytes, bytearray, str)):
        raise CodecError(f"record value must be bytes, got {type(value).__name__}")
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CodecError(f"not a crayfish message: JSON {type(doc).__name__}, expected an object")
    for key in ("creationTimestamp", "dataPointSz1", "dataPointSz2", "dataPoint"):
        if key not in doc:
            raise CodecError(f"not a crayfish message: missing key {key!r}")
    for key in ("creationTimestamp", "dataPointSz1", "dataPointSz2"):
        if not isinstance(doc[key], int) or isinstance(doc[key], bool):
            raise CodecError(f"{key} must be an integer, got {doc[key]!r:.40}")
    for key in ("dataPointSz1", "dataPointSz2"):  # Java ints
        if not 0 <= doc[key] <= _JAVA_INT_MAX:
            raise CodecError(f"{key} must be in [0, {_JAVA_INT_MAX}], got {doc[key]}")
    if not INT64[0] <= doc["creationTimestamp"] <= INT64[1]:  # a Java long
        raise CodecError(f"creationTimestamp out of range: {doc['creationTimestamp']}")
    if not isinstance(doc["dataPoint"], str):
        raise CodecError(f"dataPoint must be a string, got {type(doc['dataPoint']).__name__}")
    pred = doc.get("prediction")
    if pred is not None and not isinstance(pred, str):
        raise CodecError(f"prediction must be null or a string, got {type(pred).__name__}")
    return doc


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


class _EchoCache:
    """The dataPoint text of recently decoded batches, so encode_scored can echo it unchanged.

    Keyed by ``id(batch)``; an entry is used only when the batch's tensor bytes and shape are still
    the ones decoded, and it is dropped on use. Small and bounded: batches that never get scored
    (dead-lettered) age out.
    """

    def __init__(self, size: int = 4):
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[bytes, tuple[int, ...], str, int, int]] = OrderedDict()

    def put(self, batch: batch_pb2.DataBatch, data: bytes, text: str, sz1: int, sz2: int) -> None:
        with self._lock:
            self._entries[id(batch)] = (data, tuple(batch.input.shape), text, sz1, sz2)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def take(self, batch: batch_pb2.DataBatch) -> tuple[str, int, int] | None:
        """``(dataPoint, dataPointSz1, dataPointSz2)`` as received, or None."""
        with self._lock:
            entry = self._entries.pop(id(batch), None)
        if entry is None:
            return None
        data, shape, text, sz1, sz2 = entry
        if (batch.input.dtype == tensor_pb2.DTYPE_FLOAT32 and tuple(batch.input.shape) == shape
                and batch.input.data == data):
            return text, sz1, sz2
        return None


# Upper bound on memoized dataPoint text (characters), e.g. ~20 ResNet50 batches of 8.
FORMAT_CACHE_CHARS = 256 * 1024 * 1024


class CrayfishJsonCodec(Codec):
    """The original Crayfish JSON message (see the module docstring for the contract)."""

    name = "crayfish-json"

    def __init__(self) -> None:
        self._echo = _EchoCache()
        self._format_cache: OrderedDict[bytes, str] = OrderedDict()
        self._format_cache_chars = 0
        self._format_lock = threading.Lock()

    # -- input records -------------------------------------------------------------------------

    def _input_array(self, batch: batch_pb2.DataBatch) -> np.ndarray:
        if batch.inputs:
            raise CodecError(f"crayfish-json carries one unnamed tensor (the original format); this batch has "
                             f"named inputs {', '.join(sorted(batch.inputs))}: use the protobuf codec")
        if not batch.HasField("input"):
            raise CodecError("batch has no input tensor")
        if batch.input.dtype != tensor_pb2.DTYPE_FLOAT32:
            name = tensor_pb2.DType.Name(batch.input.dtype) if batch.input.dtype in tensor_pb2.DType.values() \
                else str(batch.input.dtype)
            raise CodecError(f"crayfish-json carries float32 only, input is {name}")
        try:
            return from_tensor(batch.input)
        except TensorError as exc:
            raise CodecError(f"bad input tensor: {exc}") from None

    def encode_batch(self, batch):
        arr = self._input_array(batch)
        rows, cols = _rows_cols(arr.shape)
        value = _document(batch.created_ns // 1_000_000, rows, cols, self._formatted(arr), None)
        return value, batch_headers(batch, arr.shape)

    def _formatted(self, arr: np.ndarray) -> str:
        """format_data_point, memoized by content: a generator re-sends a pool of the same tensors,
        and formatting is ~100x slower than hashing them."""
        key = hashlib.blake2b(arr.tobytes(), digest_size=16).digest()
        with self._format_lock:
            hit = self._format_cache.get(key)
            if hit is not None:
                self._format_cache.move_to_end(key)
                return hit
        text = format_data_point(arr)
        with self._format_lock:
            self._format_cache[key] = text
            self._format_cache_chars += len(text)
            while self._format_cache_chars > FORMAT_CACHE_CHARS and len(self._format_cache) > 1:
                _, old = self._format_cache.popitem(last=False)
                self._format_cache_chars -= len(old)
        return text

    def decode_batch(self, value, headers=None):
        doc = _parse_document(value)
        h = headers_dict(headers)
        sz1, sz2 = doc["dataPointSz1"], doc["dataPointSz2"]
        count = sz1 * sz2
        values = parse_data_point(doc["dataPoint"], count)
        shape: tuple[int, ...] = (sz1, sz2)
        hshape = header_shape(h)
        if hshape is not None and math.prod(hshape) == count:
            shape = hshape
        msg = batch_pb2.DataBatch()
        fill_ids(msg, h, doc["creationTimestamp"])
        data = values.reshape(shape).astype("<f4", copy=False).tobytes()
        msg.input.dtype = tensor_pb2.DTYPE_FLOAT32
        msg.input.shape[:] = shape
        msg.input.data = data
        if doc["dataPoint"].isascii():  # O(1) in CPython; the record value we write is ASCII
            self._echo.put(msg, data, doc["dataPoint"], sz1, sz2)
        return msg

    # -- output records ------------------------------------------------------------------------

    def encode_scored(self, scored, source=None):
        if source is None:
            raise CodecError("crayfish-json echoes the input record: encode_scored needs the source batch")
        if scored.outputs:
            raise CodecError(f"crayfish-json carries one unnamed tensor (the original format); this output has "
                             f"named tensors {', '.join(sorted(scored.outputs))}: use the protobuf codec")
        if not scored.HasField("output"):
            raise CodecError("scored batch has no output tensor")
        try:
            out = from_tensor(scored.output)
        except TensorError as exc:
            raise CodecError(f"bad output tensor: {exc}") from None
        if out.dtype.kind not in "fiub":
            raise CodecError(f"cannot print output of dtype {out.dtype} as Java floats")
        echo = self._echo.take(source)
        if echo is None:
            arr = self._input_array(source)
            shape = arr.shape
            rows, cols = _rows_cols(shape)
            data_point, trusted = format_data_point(arr), True
        else:
            shape = tuple(source.input.shape)
            (data_point, rows, cols), trusted = echo, False
        value = _document(source.created_ns // 1_000_000, rows, cols, data_point,
                          format_prediction(out.astype(np.float32, copy=False)), trusted)
        return value, scored_headers(scored, shape)

    # -- the echo key (matching outputs without headers) ---------------------------------------

    def input_fingerprint(self, batch):
        arr = self._input_array(batch)
        rows, cols = _rows_cols(arr.shape)
        return data_fingerprint(rows, cols, arr)

    def echo_key(self, created_ns, fingerprint):
        # the creationTimestamp encode_batch writes for this created_ns
        return None if fingerprint is None else echo_key(created_ns // 1_000_000, fingerprint)

    def output_echo_key(self, value):
        doc = _parse_document(value)
        sz1, sz2 = doc["dataPointSz1"], doc["dataPointSz2"]
        values = parse_data_point(doc["dataPoint"], sz1 * sz2)
        return echo_key(doc["creationTimestamp"], data_fingerprint(sz1, sz2, values))

    def decode_scored(self, value, headers=None):
        doc = _parse_document(value)
        if doc.get("prediction") is None:
            raise CodecError("not a scored crayfish message: prediction is null or missing")
        h = headers_dict(headers)
        output = parse_prediction(doc["prediction"])
        msg = batch_pb2.ScoredBatch()
        fill_ids(msg, h, doc["creationTimestamp"])
        fill_output_stamps(msg, h)
        to_tensor(output, msg.output)
        return msg
