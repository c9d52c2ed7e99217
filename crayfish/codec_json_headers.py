"""The Kafka headers of ``crayfish-json`` records: what the original JSON message has no room for.

The original Crayfish ignores headers, so they are where our ids, nanosecond stamps, exact shape,
attributes and (on output records) the broker stamp of the input and the ScoringFacts travel. The
list, their encoding and how conflicts resolve are in the :mod:`crayfish.codec_json` docstring.
Every reader raises :class:`~crayfish.codec_base.CodecError` on a malformed header.
"""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError

from crayfish.codec_base import CodecError, Headers

H_BATCH_ID = "crayfish-batch-id"
H_RUN_ID = "crayfish-run-id"
H_SEQUENCE = "crayfish-sequence"
H_INTENDED_NS = "crayfish-intended-ns"
H_CREATED_NS = "crayfish-created-ns"
H_MODEL = "crayfish-model"
H_SHAPE = "crayfish-shape"
H_INPUT_APPEND_MS = "crayfish-input-append-ms"
H_FACTS = "crayfish-facts"
H_ATTR_PREFIX = "crayfish-attr-"

INT64 = (-(1 << 63), (1 << 63) - 1)
UINT64 = (0, (1 << 64) - 1)

# ---- reading ---------------------------------------------------------------------------------

def headers_dict(headers: Headers | None) -> dict[str, bytes]:
    """name -> value of a record's headers ((str, bytes) pairs, a dict or None); the last of a
    repeated name wins, ``None`` values are skipped."""
    out: dict[str, bytes] = {}
    if not headers:
        return out
    if isinstance(headers, dict):
        headers = list(headers.items())
    try:
        for key, value in headers:
            if value is None:
                continue
            if isinstance(value, str):
                value = value.encode()
            out[str(key)] = bytes(value)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"headers must be (str, bytes) pairs: {exc}") from None
    return out


def _h_str(h: dict[str, bytes], key: str) -> str | None:
    if key not in h:
        return None
    try:
        return h[key].decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError(f"header {key} is not UTF-8") from None


def _h_int(h: dict[str, bytes], key: str, bounds: tuple[int, int]) -> int | None:
    raw = h.get(key)
    if raw is None:
        return None
    try:
        text = raw.decode("ascii").strip()
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError
        value = int(text)
    except (UnicodeDecodeError, ValueError):
        raise CodecError(f"header {key} is not an integer: {raw[:40]!r}") from None
    if not bounds[0] <= value <= bounds[1]:
        raise CodecError(f"header {key} out of range: {value}")
    return value


def header_shape(h: dict[str, bytes]) -> tuple[int, ...] | None:
    """The input tensor's exact shape (``crayfish-shape``), None without the header."""
    raw = h.get(H_SHAPE)
    if raw is None:
        return None
    try:
        text = raw.decode("ascii").strip()
        if not text:
            return ()
        dims = tuple(int(d) for d in text.split(","))
    except (UnicodeDecodeError, ValueError):
        raise CodecError(f"header {H_SHAPE} is not a comma-separated list of integers: {raw[:40]!r}") from None
    if any(d < 0 for d in dims):
        raise CodecError(f"header {H_SHAPE} has a negative dimension: {dims}")
    return dims


def _fill_ids(msg, h: dict[str, bytes], creation_ms: int) -> None:
    for key, field in ((H_BATCH_ID, "batch_id"), (H_RUN_ID, "run_id"), (H_MODEL, "model")):
        value = _h_str(h, key)
        if value is not None:
            setattr(msg, field, value)
    seq = _h_int(h, H_SEQUENCE, UINT64)
    if seq is not None:
        msg.sequence = seq
    intended = _h_int(h, H_INTENDED_NS, INT64)
    if intended is not None:
        msg.intended_ns = intended
    created = _h_int(h, H_CREATED_NS, INT64)
    if created is None:
        created = creation_ms * 1_000_000
        if not INT64[0] <= created <= INT64[1]:
            raise CodecError(f"creationTimestamp out of range: {creation_ms}")
    msg.created_ns = created
    for key in h:
        if key.startswith(H_ATTR_PREFIX):
            msg.attributes[key[len(H_ATTR_PREFIX):]] = _h_str(h, key)


def fill_ids(msg, h: dict[str, bytes], creation_ms: int) -> None:
    """Fill a DataBatch / ScoredBatch's ids, stamps, model and attributes from the headers; without
    headers ``created_ns`` comes from the document's ``creationTimestamp`` (ms)."""
    try:
        _fill_ids(msg, h, creation_ms)
    except ValueError as exc:  # CodecError included; protobuf refusing a value
        raise CodecError(str(exc)) from None


def fill_output_stamps(msg, h: dict[str, bytes]) -> None:
    """A ScoredBatch's ``input_append_ms`` and ``facts`` from the headers, when present."""
    append_ms = _h_int(h, H_INPUT_APPEND_MS, INT64)
    if append_ms is not None:
        msg.input_append_ms = append_ms
    if H_FACTS in h:
        try:
            msg.facts.ParseFromString(h[H_FACTS])
        except DecodeError as exc:
            raise CodecError(f"header {H_FACTS} is not a crayfish.v1.ScoringFacts: {exc}") from None


# ---- writing ---------------------------------------------------------------------------------

def _ascii(value: int) -> bytes:
    return str(int(value)).encode("ascii")


def _id_headers(msg, shape: tuple[int, ...] | None) -> list[tuple[str, bytes]]:
    headers = [
        (H_BATCH_ID, msg.batch_id.encode("utf-8")),
        (H_RUN_ID, msg.run_id.encode("utf-8")),
        (H_SEQUENCE, _ascii(msg.sequence)),
        (H_INTENDED_NS, _ascii(msg.intended_ns)),
        (H_CREATED_NS, _ascii(msg.created_ns)),
        (H_MODEL, msg.model.encode("utf-8")),
    ]
    if shape is not None:
        headers.append((H_SHAPE, ",".join(map(str, shape)).encode("ascii")))
    headers.extend((H_ATTR_PREFIX + k, v.encode("utf-8")) for k, v in sorted(msg.attributes.items()))
    return headers


def batch_headers(batch, shape: tuple[int, ...] | None) -> list[tuple[str, bytes]]:
    """The headers of an input record."""
    return _id_headers(batch, shape)


def scored_headers(scored, shape: tuple[int, ...] | None) -> list[tuple[str, bytes]]:
    """The headers of an output record: the ids of the batch plus the output stamps."""
    headers = _id_headers(scored, shape)
    headers.append((H_INPUT_APPEND_MS, _ascii(scored.input_append_ms)))
    if scored.HasField("facts"):
        headers.append((H_FACTS, scored.facts.SerializeToString()))
    return headers
