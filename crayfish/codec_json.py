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

Floats follow ``Float.toString`` of JDK 19+ (Raffaello Giulietti's algorithm): the shortest decimal
that rounds back to the float32 (closest to it on ties of length; when the shortest has one digit,
the closest of the one- and two-digit candidates, which is why ``Float.MIN_VALUE`` prints as
``1.4E-45``), written as ``123.0`` / ``0.00123`` when ``1e-3 <= |x| < 1e7`` and as ``1.0E-5`` /
``1.2345679E7`` otherwise; ``NaN``, ``Infinity``, ``-Infinity``, ``-0.0``. Encoding is vectorised
with numpy (a search for the shortest significand, then ``repr`` of the equivalent double); the rare
values outside ``[1e-12, 1e22)`` and near-ties fall back to an exact rational implementation.

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
- JDK 8..18 ``Float.toString`` (``FloatingDecimal``) sometimes printed one digit more than the
  shortest (e.g. ``1.00000005E-14`` style strings); such records decode to the same float32 values,
  but our re-encoding of them is the shortest form, so it is not byte-identical to that JVM's.
- Decoding is lenient where it costs nothing: whitespace around values, a missing final comma,
  ``nan`` / ``inf`` spellings and a missing ``prediction`` key on inputs are accepted. Parsing a
  decimal goes through float64 before float32 (numpy); for the <= 9-digit strings Java prints this
  gives the float32 back exactly.
- ``encode_scored`` echoes the input's ``dataPoint`` text exactly as it was received when the source
  batch is one this codec decoded (and its tensor is unchanged): like the original, which kept the
  string, it then costs a copy, not a re-format.
"""

from __future__ import annotations

import sys

if "crayfish.codec" not in sys.modules:  # import-order shim, see below
    # crayfish.codec imports this module at its end to register the codec, so importing this
    # module first would be circular. Hand the import over: drop our half-built self, let
    # crayfish.codec import a complete copy of this module, and importlib then gives every importer
    # (this import's caller included) that copy, the same one crayfish.codec.CODECS uses.
    del sys.modules[__name__]
    import crayfish.codec  # noqa: F401,E402

import json
import math
import re
import threading
from collections import OrderedDict
from decimal import Decimal
from fractions import Fraction

import numpy as np
from google.protobuf.message import DecodeError

from crayfish.codec import Codec, CodecError, Headers
from crayfish.tensor import TensorError, from_tensor, to_tensor
from crayfish.v1 import batch_pb2, tensor_pb2

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

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)

# ---------------------------------------------------------------------------------------------
# Java Float.toString
# ---------------------------------------------------------------------------------------------

_POW10 = np.array([float(10 ** k) for k in range(23)])  # exact doubles
_FAST_MIN, _FAST_MAX = 1e-12, 1e22  # |x| range the vectorised search handles (|exponents| <= 22)


def _java_format(neg: bool, digits: str, exp: int) -> str:
    """Java layout of the decimal ``0.d1d2... * 10^(exp+1)``, i.e. ``d1.d2... * 10^exp``."""
    if -3 <= exp < 7:
        if exp >= 0:
            text = digits[:exp + 1].ljust(exp + 1, "0") + "." + (digits[exp + 1:] or "0")
        else:
            text = "0." + "0" * (-exp - 1) + digits
    else:
        text = digits[0] + "." + (digits[1:] or "0") + "E" + str(exp)
    return "-" + text if neg else text


def _java_float_exact(x: np.float32) -> str:
    """Float.toString (JDK 19+) of one float32, with exact rational arithmetic. Slow; any value."""
    x = np.float32(x)
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "-Infinity" if x < 0 else "Infinity"
    neg = bool(np.signbit(x))
    a = np.abs(x)
    if a == 0:
        return "-0.0" if neg else "0.0"
    v = Fraction(float(a))
    with np.errstate(over="ignore"):
        pred = Fraction(float(np.nextafter(a, np.float32(0))))
        succ = np.nextafter(a, np.float32(np.inf))
    lo = (v + pred) / 2
    # Above the largest finite float the next "value" would be 2**128: same gap as below.
    hi = v + (v - pred) / 2 if np.isinf(succ) else (v + Fraction(float(succ))) / 2
    even = int(a.view(np.uint32)) & 1 == 0

    def in_r(d: Fraction) -> bool:
        return lo <= d <= hi if even else lo < d < hi

    e = math.floor(math.log10(float(v)))
    while Fraction(10) ** e > v:
        e -= 1
    while Fraction(10) ** (e + 1) <= v:
        e += 1

    def candidates(n: int) -> list[tuple[int, int]]:
        j = e - n + 1
        scale = Fraction(10) ** j
        c = math.floor(v / scale)
        return [(cc, j) for cc in (c, c + 1) if in_r(cc * scale)]

    for n in range(1, 11):
        found = candidates(n)
        if found:
            if n == 1:  # JDK: with a one-digit shortest, pick the closest of lengths 1 and 2
                found += candidates(2)
            best = min(found, key=lambda cj: (abs(cj[0] * Fraction(10) ** cj[1] - v), cj[0] % 2))
            c, j = best
            s = str(c)
            return _java_format(neg, s.rstrip("0") or "0", j + len(s) - 1)
    raise AssertionError(f"no shortest decimal for {x!r}")  # pragma: no cover


def _shortest_doubles(ax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positive float32 ``ax`` in [_FAST_MIN, _FAST_MAX): the float64 nearest to the shortest,
    closest decimal that rounds back to each value, and a mask of values this could not settle
    (near-ties), which must take the exact path."""
    n = ax.size
    x = ax.astype(np.float64)
    e = np.floor(np.log10(x)).astype(np.int64)  # may be off by one; the search tolerates it

    def probe(p: np.ndarray, idx: np.ndarray):
        xv = x[idx]
        k = e[idx] - (p - 1)
        pos = k >= 0
        pw = _POW10[np.abs(k)]
        q = np.where(pos, xv / pw, xv * pw)
        m0 = np.floor(q)
        m1 = m0 + 1.0
        d0 = np.where(pos, m0 * pw, m0 / pw)
        d1 = np.where(pos, m1 * pw, m1 / pw)
        xf = ax[idx]
        ok0 = d0.astype(np.float32) == xf
        ok1 = d1.astype(np.float32) == xf
        return xv, m0, d0, d1, ok0, ok1

    # Binary search for the minimal length (having a decimal in the rounding interval is monotone
    # in the length); 10 covers 9 digits plus an off-by-one exponent estimate.
    lo = np.ones(n, dtype=np.int64)
    hi = np.full(n, 10, dtype=np.int64)
    active = np.nonzero(lo < hi)[0]
    while active.size:
        mid = (lo[active] + hi[active]) // 2
        _, _, _, _, ok0, ok1 = probe(mid, active)
        found = ok0 | ok1
        hi[active[found]] = mid[found]
        lo[active[~found]] = mid[~found] + 1
        active = active[lo[active] < hi[active]]

    idx = np.arange(n)
    xv, m0, d0, d1, ok0, ok1 = probe(lo, idx)
    dist0 = xv - d0
    dist1 = d1 - xv
    both = ok0 & ok1
    near_tie = both & (np.abs(dist0 - dist1) <= 1e-12 * xv)
    take1 = ok1 & (~ok0 | (dist1 < dist0))
    out = np.where(take1, d1, d0)
    unresolved = near_tie | ~(ok0 | ok1)
    return out, unresolved


def _java_float_dragon4(x: np.float32) -> str:
    """Float.toString of one normal float32 via numpy's Dragon4 (shortest, closest digits)."""
    sign, digits, exponent = Decimal(np.format_float_scientific(x, unique=True, trim="-")).normalize().as_tuple()
    ds = "".join(map(str, digits))
    return _java_format(bool(sign), ds, exponent + len(ds) - 1)


_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32


def java_float_strings(values: np.ndarray) -> list[str]:
    """``Float.toString`` of every value (flattened, C order) as a list of str."""
    x = np.ascontiguousarray(values, dtype=np.float32).ravel()
    if x.size == 0:
        return []
    with np.errstate(all="ignore"):
        ax = np.abs(x)
        fast = (ax >= _FAST_MIN) & (ax < _FAST_MAX)  # False for NaN
        dbl = np.where(ax == 0, x.astype(np.float64), 0.0)  # keeps -0.0; placeholders elsewhere
        slow = ~fast & (ax != 0)  # NaN, infinities, out of the fast range
        fast_idx = np.nonzero(fast)[0]
        if fast_idx.size:
            short, unresolved = _shortest_doubles(ax[fast_idx])
            dbl[fast_idx] = np.copysign(short, x[fast_idx])
            slow[fast_idx[unresolved]] = True
    # Python's repr of the double is the same shortest digit string, and for 1e-3 <= |v| < 1e7
    # (and zeros) also Java's layout. Everything else is fixed up below.
    strs = list(map(repr, dbl.tolist()))
    adbl = np.abs(dbl)
    resci = ~slow & (adbl != 0) & ((adbl < 1e-3) | (adbl >= 1e7))
    for i in np.nonzero(resci)[0].tolist():
        sign, digits, exponent = Decimal(strs[i]).normalize().as_tuple()
        ds = "".join(map(str, digits))
        strs[i] = _java_format(bool(sign), ds, exponent + len(ds) - 1)
    for i in np.nonzero(slow)[0].tolist():
        v = x[i]
        if np.isfinite(v) and abs(float(v)) >= _TINY:
            strs[i] = _java_float_dragon4(v)
        else:  # NaN, infinities, subnormals (where the JDK's one-or-two-digit rule matters)
            strs[i] = _java_float_exact(v)
    return strs


def java_float_string(value: float) -> str:
    """``Float.toString`` of one value (rounded to float32 first)."""
    return java_float_strings(np.array([value], dtype=np.float32))[0]


def format_data_point(values: np.ndarray) -> str:
    """The ``dataPoint`` text: every value followed by a comma."""
    strs = java_float_strings(values)
    return ",".join(strs) + "," if strs else ""


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
# Headers
# ---------------------------------------------------------------------------------------------

def _headers_dict(headers: Headers | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if not headers:
        return out
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


def _h_shape(h: dict[str, bytes]) -> tuple[int, ...] | None:
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


def _fill_ids(msg, h: dict[str, bytes], creation_ms: int) -> None:
    for key, field in ((H_BATCH_ID, "batch_id"), (H_RUN_ID, "run_id"), (H_MODEL, "model")):
        value = _h_str(h, key)
        if value is not None:
            setattr(msg, field, value)
    seq = _h_int(h, H_SEQUENCE, _UINT64)
    if seq is not None:
        msg.sequence = seq
    intended = _h_int(h, H_INTENDED_NS, _INT64)
    if intended is not None:
        msg.intended_ns = intended
    created = _h_int(h, H_CREATED_NS, _INT64)
    if created is None:
        created = creation_ms * 1_000_000
        if not _INT64[0] <= created <= _INT64[1]:
            raise CodecError(f"creationTimestamp out of range: {creation_ms}")
    msg.created_ns = created
    for key in h:
        if key.startswith(H_ATTR_PREFIX):
            msg.attributes[key[len(H_ATTR_PREFIX):]] = _h_str(h, key)


# ---------------------------------------------------------------------------------------------
# JSON document
# ---------------------------------------------------------------------------------------------

def _document(creation_ms: int, sz1: int, sz2: int, data_point: str, prediction: str | None) -> bytes:
    # json.dumps of the string escapes nothing here (digits, '.', 'E', '-', ',', letters).
    pred = "null" if prediction is None else json.dumps(prediction)
    return (f'{{"creationTimestamp":{int(creation_ms)},"dataPointSz1":{int(sz1)},"dataPointSz2":{int(sz2)},'
            f'"dataPoint":{json.dumps(data_point)},"prediction":{pred}}}').encode("utf-8")


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
    for key in ("dataPointSz1", "dataPointSz2"):
        if doc[key] < 0:
            raise CodecError(f"{key} must not be negative, got {doc[key]}")
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
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))


class _EchoCache:
    """The dataPoint text of recently decoded batches, so encode_scored can echo it unchanged.

    Keyed by ``id(batch)``; an entry is used only when the batch's tensor bytes and shape are still
    the ones decoded, and it is dropped on use. Small and bounded: batches that never get scored
    (dead-lettered) age out.
    """

    def __init__(self, size: int = 4):
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[bytes, tuple[int, ...], str]] = OrderedDict()

    def put(self, batch: batch_pb2.DataBatch, data: bytes, text: str) -> None:
        with self._lock:
            self._entries[id(batch)] = (data, tuple(batch.input.shape), text)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def take(self, batch: batch_pb2.DataBatch) -> str | None:
        with self._lock:
            entry = self._entries.pop(id(batch), None)
        if entry is None:
            return None
        data, shape, text = entry
        if (batch.input.dtype == tensor_pb2.DTYPE_FLOAT32 and tuple(batch.input.shape) == shape
                and batch.input.data == data):
            return text
        return None


class CrayfishJsonCodec(Codec):
    """The original Crayfish JSON message (see the module docstring for the contract)."""

    name = "crayfish-json"

    def __init__(self) -> None:
        self._echo = _EchoCache()

    # -- input records -------------------------------------------------------------------------

    def _input_array(self, batch: batch_pb2.DataBatch) -> np.ndarray:
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
        value = _document(batch.created_ns // 1_000_000, rows, cols, format_data_point(arr), None)
        return value, _id_headers(batch, arr.shape)

    def decode_batch(self, value, headers=None):
        doc = _parse_document(value)
        h = _headers_dict(headers)
        sz1, sz2 = doc["dataPointSz1"], doc["dataPointSz2"]
        count = sz1 * sz2
        values = parse_data_point(doc["dataPoint"], count)
        shape: tuple[int, ...] = (sz1, sz2)
        hshape = _h_shape(h)
        if hshape is not None and int(np.prod(hshape, dtype=np.int64)) == count:
            shape = hshape
        msg = batch_pb2.DataBatch()
        try:
            _fill_ids(msg, h, doc["creationTimestamp"])
        except ValueError as exc:
            raise CodecError(str(exc)) from None
        data = values.reshape(shape).astype("<f4", copy=False).tobytes()
        msg.input.dtype = tensor_pb2.DTYPE_FLOAT32
        msg.input.shape[:] = shape
        msg.input.data = data
        self._echo.put(msg, data, doc["dataPoint"])
        return msg

    # -- output records ------------------------------------------------------------------------

    def encode_scored(self, scored, source=None):
        if source is None:
            raise CodecError("crayfish-json echoes the input record: encode_scored needs the source batch")
        if not scored.HasField("output"):
            raise CodecError("scored batch has no output tensor")
        try:
            out = from_tensor(scored.output)
        except TensorError as exc:
            raise CodecError(f"bad output tensor: {exc}") from None
        if out.dtype.kind not in "fiub":
            raise CodecError(f"cannot print output of dtype {out.dtype} as Java floats")
        data_point = self._echo.take(source)
        if data_point is None:
            arr = self._input_array(source)
            data_point = format_data_point(arr)
            shape = arr.shape
        else:
            shape = tuple(source.input.shape)
        rows, cols = _rows_cols(shape)
        value = _document(source.created_ns // 1_000_000, rows, cols, data_point,
                          format_prediction(out.astype(np.float32, copy=False)))
        headers = _id_headers(scored, shape)
        headers.append((H_INPUT_APPEND_MS, _ascii(scored.input_append_ms)))
        if scored.HasField("facts"):
            headers.append((H_FACTS, scored.facts.SerializeToString()))
        return value, headers

    def decode_scored(self, value, headers=None):
        doc = _parse_document(value)
        if doc.get("prediction") is None:
            raise CodecError("not a scored crayfish message: prediction is null or missing")
        h = _headers_dict(headers)
        output = parse_prediction(doc["prediction"])
        msg = batch_pb2.ScoredBatch()
        try:
            _fill_ids(msg, h, doc["creationTimestamp"])
        except ValueError as exc:
            raise CodecError(str(exc)) from None
        append_ms = _h_int(h, H_INPUT_APPEND_MS, _INT64)
        if append_ms is not None:
            msg.input_append_ms = append_ms
        if H_FACTS in h:
            try:
                msg.facts.ParseFromString(h[H_FACTS])
            except DecodeError as exc:
                raise CodecError(f"header {H_FACTS} is not a crayfish.v1.ScoringFacts: {exc}") from None
        to_tensor(output, msg.output)
        return msg
