"""The tensor encoding between the ``torchserve`` client and our TorchServe handler (numpy only).

TorchServe's gRPC ``PredictionsRequest`` carries ``map<string, bytes> input`` and its
``PredictionResponse`` one ``bytes prediction``; both are opaque to TorchServe, so the tensors
travel as raw little-endian bytes, float32 for the zoo's models (the original Crayfish sent the
text of a Python list and parsed it back: ~10x the bytes and a parse per call).

Request (``PredictionsRequest.input``), one tensor::

    "data"  : the input array's bytes, little-endian, C order (float32: the single-tensor hot path)
    "shape" : ASCII decimal dimensions joined by ",", e.g. b"32,1,784"
    "dtype" : optional, b"float32" (default) or another of :data:`DTYPES` (a model file's input)

or named tensors (the named-tensor contract of serving.models.spec: ``{input name: array}``)::

    "tensors" : ASCII JSON [[name, dtype, shape], ...], e.g. [["features","float32",[2,6]],
                ["mask","int64",[2,6]]] (no "shape" key: that is how a named request is told apart)
    "data.0", "data.1", ... : the bytes of each tensor, in the order of "tensors" (one map entry
                each, so each arrives in a buffer of its own: aligned, decoded without a copy)

Response (``PredictionResponse.prediction``), one of::

    b"CFT2" | u64 inference_ns | u32 ndim | u32 n | ndim x i64 dims | float32 data | n bytes server
    b"CFT1" | u64 inference_ns | u32 ndim | ndim x i64 dims | float32 data   (no server named)
    b"CFN1" | u64 inference_ns | u32 m | u32 n | m bytes meta | n bytes server | pad |
              tensor 0 | pad | tensor 1 ...      (named tensors; see below)
    b"CFE1" | u32 code | UTF-8 message
                                                                    (all little-endian)

``CFN1`` answers a named request, a model with several outputs, and an output that is not
float32: ``meta`` is ASCII JSON [[name, dtype, shape], ...] in body order, and every tensor starts
at an offset of the frame that is a multiple of 8 (zero padding before it), so the client's views
of the frame are aligned. A ``CFN1`` frame of one tensor answering an unnamed request is that
array (the client unwraps it).

``inference_ns`` is the time the handler spent in the model call (``server_inference_ns`` of a
``ClientResult``); ``server`` (UTF-8) is who answered, as the handler knows it from inside
TorchServe's worker (``"torchserve 0.12.0"``: the ``ts`` package running it), which the client
reports as ``ClientResult.server``. The ``CFE1`` error frame is used only inside a TorchServe server-side batch
(``batch_size`` > 1), where TorchServe cannot fail one request of the batch with its own status;
a request scored alone fails with a real gRPC status instead (the handler raises TorchServe's
``PredictionException`` with ``code``, which TorchServe maps 400 -> INVALID_ARGUMENT, ...).
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

DATA_KEY = "data"
SHAPE_KEY = "shape"
DTYPE_KEY = "dtype"
TENSORS_KEY = "tensors"
OK_MAGIC = b"CFT1"
OK_SERVER_MAGIC = b"CFT2"
NAMED_MAGIC = b"CFN1"
ERR_MAGIC = b"CFE1"
_F32 = np.dtype("<f4")
_HEAD = struct.Struct("<4sQI")
_HEAD2 = struct.Struct("<4sQII")
_NAMED = struct.Struct("<4sQII")
_ERR = struct.Struct("<4sI")
_ALIGN = 8
# every dtype a tensor may travel in (the crayfish.v1.Tensor dtypes), little-endian
DTYPES: dict[str, np.dtype] = {n: np.dtype(n).newbyteorder("<") for n in (
    "float32", "float64", "float16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool")}


class WireError(ValueError):
    """An undecodable request or response (bad shape text, size mismatch, unknown dtype)."""


def data_key(i: int) -> str:
    """The map key of the ``i``-th tensor of a named request."""
    return f"{DATA_KEY}.{i}"


def encode_request(x: np.ndarray) -> dict[str, bytes]:
    """The ``PredictionsRequest.input`` map for ``x``: float32 (the hot path) or another of
    :data:`DTYPES`, little-endian; the handler rejects a dtype its model does not take with
    INVALID_ARGUMENT."""
    if x.dtype == _F32:
        return {DATA_KEY: np.ascontiguousarray(x).tobytes(), SHAPE_KEY: ",".join(map(str, x.shape)).encode(),
                DTYPE_KEY: b"float32"}
    dt = DTYPES.get(x.dtype.name)
    if dt is not None:
        x = np.require(x, dtype=dt, requirements="C")
    return {DATA_KEY: np.ascontiguousarray(x).tobytes(), SHAPE_KEY: ",".join(map(str, x.shape)).encode(),
            DTYPE_KEY: x.dtype.name.encode()}


def _meta(arrays) -> tuple[list, list[np.ndarray]]:
    meta, data = [], []
    for name, a in arrays.items():
        a = np.asarray(a)
        dt = DTYPES.get(a.dtype.name)
        if dt is None:
            raise WireError(f"tensor {name!r}: unsupported dtype {a.dtype}; one of {', '.join(DTYPES)}")
        a = np.require(a, dtype=dt, requirements="C")
        meta.append([str(name), dt.name, [int(d) for d in a.shape]])
        data.append(a)
    return meta, data


def encode_named_request(arrays) -> dict[str, bytes]:
    """The ``PredictionsRequest.input`` map for ``{input name: array}`` (named tensors, each in
    its own dtype); :class:`WireError` for a dtype outside :data:`DTYPES`."""
    meta, data = _meta(arrays)
    out = {TENSORS_KEY: json.dumps(meta, separators=(",", ":")).encode()}
    out.update((data_key(i), a.tobytes()) for i, a in enumerate(data))
    return out


def is_named_request(inputs) -> bool:
    return TENSORS_KEY in inputs and SHAPE_KEY not in inputs


def _parse_meta(text: str, what: str) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    try:
        items = [(str(n), DTYPES[str(d)], tuple(int(s) for s in shape)) for n, d, shape in json.loads(text)]
    except KeyError as exc:
        raise WireError(f"bad {what}: unsupported dtype {exc.args[0]!r}; one of {', '.join(DTYPES)}") from None
    except (ValueError, TypeError) as exc:
        raise WireError(f"bad {what} {text[:200]!r}: {exc} (expected JSON [[name, dtype, shape], ...])") from None
    seen = set()
    for name, _, shape in items:
        if any(d < 0 for d in shape):
            raise WireError(f"tensor {name!r}: negative dimension in {list(shape)}")
        if name in seen:
            raise WireError(f"tensor {name!r} given twice")
        seen.add(name)
    return items


def decode_named_request(inputs: dict) -> dict[str, np.ndarray]:
    """``{input name: read-only array}`` of a named request (views of the request buffers, no
    copy); raises :class:`WireError`."""
    items = _parse_meta(_text(inputs[TENSORS_KEY]), f"{TENSORS_KEY!r} entry")
    out: dict[str, np.ndarray] = {}
    for i, (name, dt, shape) in enumerate(items):
        data = inputs.get(data_key(i))
        if data is None:
            raise WireError(f"tensor {name!r}: no {data_key(i)!r} entry in the request")
        n = math.prod(shape)
        if len(data) != n * dt.itemsize:
            raise WireError(f"tensor {name!r}: shape {list(shape)} of {dt.name} needs {n * dt.itemsize} bytes, "
                            f"got {len(data)}")
        out[name] = np.frombuffer(data, dtype=dt).reshape(shape)
    return out


def _text(v: object) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("ascii", errors="replace")
    return str(v)


def decode_request(inputs: dict) -> np.ndarray:
    """The array of one request's single-tensor input map (TorchServe hands values as bytearray):
    float32 unless ``dtype`` names another of :data:`DTYPES`; raises :class:`WireError`. Zero-copy:
    a read-only view of the request buffer. (A named request: :func:`decode_named_request`.)"""
    if DATA_KEY not in inputs or SHAPE_KEY not in inputs:
        raise WireError(f"request needs inputs {DATA_KEY!r} and {SHAPE_KEY!r}, got {sorted(inputs)}")
    dtype = _text(inputs.get(DTYPE_KEY, b"float32")).strip() or "float32"
    dt = _F32 if dtype == "float32" else DTYPES.get(dtype)
    if dt is None:
        raise WireError(f"unsupported dtype {dtype!r}; one of {', '.join(DTYPES)}")
    try:
        shape = tuple(int(s) for s in _text(inputs[SHAPE_KEY]).split(","))
    except ValueError:
        raise WireError(f"bad shape {_text(inputs[SHAPE_KEY])!r}: expected decimal dims joined by ','") from None
    if any(d < 0 for d in shape):
        raise WireError(f"bad shape {list(shape)}: negative dimension")
    data = inputs[DATA_KEY]
    n = math.prod(shape)
    if len(data) != dt.itemsize * n:
        raise WireError(f"shape {list(shape)} needs {dt.itemsize * n} bytes of {dt.name}, got {len(data)}")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def encode_response(y: np.ndarray, inference_ns: int = 0, server: str = "") -> bytes:
    """An answer frame: ``CFT2`` naming ``server``, or ``CFT1`` when ``server`` is empty."""
    y = np.ascontiguousarray(y, dtype=_F32)
    dims = struct.pack(f"<{y.ndim}q", *y.shape)
    if not server:
        return b"".join((_HEAD.pack(OK_MAGIC, inference_ns, y.ndim), dims, y.tobytes()))
    name = server.encode("utf-8")
    return b"".join((_HEAD2.pack(OK_SERVER_MAGIC, inference_ns, y.ndim, len(name)), dims, y.tobytes(), name))


def encode_named_response(arrays, inference_ns: int = 0, server: str = "") -> bytes:
    """A ``CFN1`` frame of ``{output name: array}`` (each in its own dtype, every tensor 8-aligned)."""
    meta, data = _meta(arrays)
    meta_b = json.dumps(meta, separators=(",", ":")).encode()
    name = server.encode("utf-8")
    parts = [_NAMED.pack(NAMED_MAGIC, inference_ns, len(meta_b), len(name)), meta_b, name]
    size = _NAMED.size + len(meta_b) + len(name)
    for a in data:
        pad = -size % _ALIGN
        if pad:
            parts.append(b"\0" * pad)
        parts.append(a.tobytes())
        size += pad + a.nbytes
    return b"".join(parts)


def _decode_named(body: bytes) -> tuple[dict[str, np.ndarray], int, str]:
    if len(body) < _NAMED.size:
        raise WireError(f"truncated named response ({len(body)} bytes)")
    _, inference_ns, meta_len, name_len = _NAMED.unpack_from(body)
    off = _NAMED.size
    if off + meta_len + name_len > len(body):
        raise WireError(f"truncated named response ({len(body)} bytes, header says {off + meta_len + name_len}+)")
    meta = _parse_meta(bytes(body[off:off + meta_len]).decode("ascii", errors="replace"), "response tensors")
    off += meta_len
    server = bytes(body[off:off + name_len]).decode("utf-8", errors="replace")
    off += name_len
    out: dict[str, np.ndarray] = {}
    for name, dt, shape in meta:
        off += -off % _ALIGN
        n = math.prod(shape)
        if off + n * dt.itemsize > len(body):
            raise WireError(f"response tensor {name!r}: shape {list(shape)} of {dt.name} needs "
                            f"{n * dt.itemsize} bytes from byte {off}, the frame has {len(body)}")
        out[name] = np.frombuffer(body, dtype=dt, count=n, offset=off).reshape(shape)
        off += n * dt.itemsize
    if off != len(body):
        raise WireError(f"response has {len(body)} bytes, its tensors {[m[0] for m in meta]} need {off}")
    return out, inference_ns, server


def encode_error(code: int, message: str) -> bytes:
    return _ERR.pack(ERR_MAGIC, code) + message.encode("utf-8", errors="replace")


def decode_response(body: bytes) -> tuple[np.ndarray | dict[str, np.ndarray], int, str]:
    """``(output, inference_ns, server)`` (``server`` "" for a ``CFT1`` frame; ``output`` a
    ``{name: array}`` dict for a ``CFN1`` frame); an error frame raises ``WireError`` subclass
    :class:`RemoteError` with its code."""
    magic = bytes(body[:4])
    if magic == NAMED_MAGIC:
        return _decode_named(body)
    if magic == ERR_MAGIC:
        _, code = _ERR.unpack_from(body)
        raise RemoteError(code, bytes(body[_ERR.size:]).decode("utf-8", errors="replace"))
    if magic == OK_MAGIC and len(body) >= _HEAD.size:
        _, inference_ns, ndim = _HEAD.unpack_from(body)
        head, name_len = _HEAD.size, 0
    elif magic == OK_SERVER_MAGIC and len(body) >= _HEAD2.size:
        _, inference_ns, ndim, name_len = _HEAD2.unpack_from(body)
        head = _HEAD2.size
    else:
        raise WireError(f"not a crayfish tensor response (starts with {bytes(body[:16])!r})")
    off = head + 8 * ndim
    shape = struct.unpack_from(f"<{ndim}q", body, head)
    n = int(np.prod(shape)) if shape else 1
    if len(body) - off - name_len != 4 * n:
        raise WireError(f"response shape {list(shape)} needs {4 * n} bytes, got {len(body) - off - name_len}")
    server = bytes(body[len(body) - name_len:]).decode("utf-8", errors="replace") if name_len else ""
    return np.frombuffer(body, dtype=_F32, count=n, offset=off).reshape(shape), inference_ns, server


class RemoteError(WireError):
    """An error frame from the handler (``code``: HTTP-style, 400 = bad input)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
