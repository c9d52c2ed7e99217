"""The tensor encoding between the ``torchserve`` client and our TorchServe handler (numpy only).

TorchServe's gRPC ``PredictionsRequest`` carries ``map<string, bytes> input`` and its
``PredictionResponse`` one ``bytes prediction``; both are opaque to TorchServe, so the tensors
travel as raw little-endian float32 (the original Crayfish sent the text of a Python list and
parsed it back: ~10x the bytes and a parse per call).

Request (``PredictionsRequest.input``)::

    "data"  : the input array's bytes, little-endian float32, C order
    "shape" : ASCII decimal dimensions joined by ",", e.g. b"32,1,784"
    "dtype" : optional, b"float32" (the only dtype accepted)

Response (``PredictionResponse.prediction``), one of::

    b"CFT2" | u64 inference_ns | u32 ndim | u32 n | ndim x i64 dims | float32 data | n bytes server
    b"CFT1" | u64 inference_ns | u32 ndim | ndim x i64 dims | float32 data   (no server named)
    b"CFE1" | u32 code | UTF-8 message
                                                                    (all little-endian)

``inference_ns`` is the time the handler spent in the model call (``server_inference_ns`` of a
``ClientResult``); ``server`` (UTF-8) is who answered, as the handler knows it from inside
TorchServe's worker (``"torchserve 0.12.0"``: the ``ts`` package running it), which the client
reports as ``ClientResult.server``. The ``CFE1`` error frame is used only inside a TorchServe server-side batch
(``batch_size`` > 1), where TorchServe cannot fail one request of the batch with its own status;
a request scored alone fails with a real gRPC status instead (the handler raises TorchServe's
``PredictionException`` with ``code``, which TorchServe maps 400 -> INVALID_ARGUMENT, ...).
"""

from __future__ import annotations

import struct

import numpy as np

DATA_KEY = "data"
SHAPE_KEY = "shape"
DTYPE_KEY = "dtype"
OK_MAGIC = b"CFT1"
OK_SERVER_MAGIC = b"CFT2"
ERR_MAGIC = b"CFE1"
_F32 = np.dtype("<f4")
_HEAD = struct.Struct("<4sQI")
_HEAD2 = struct.Struct("<4sQII")
_ERR = struct.Struct("<4sI")


class WireError(ValueError):
    """An undecodable request or response (bad shape text, size mismatch, unknown dtype)."""


def encode_request(x: np.ndarray) -> dict[str, bytes]:
    """The ``PredictionsRequest.input`` map for ``x`` (float32; other dtypes are sent as they are
    and rejected by the server with INVALID_ARGUMENT)."""
    dtype = "float32" if x.dtype == np.float32 else str(x.dtype)
    if x.dtype == np.float32 and x.dtype.byteorder == ">":
        x = x.astype(_F32)
    return {DATA_KEY: np.ascontiguousarray(x).tobytes(), SHAPE_KEY: ",".join(map(str, x.shape)).encode(),
            DTYPE_KEY: dtype.encode()}


def _text(v: object) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("ascii", errors="replace")
    return str(v)


def decode_request(inputs: dict) -> np.ndarray:
    """The float32 array of one request's input map (TorchServe hands values as bytearray);
    raises :class:`WireError`. Zero-copy: a read-only view of the request buffer."""
    if DATA_KEY not in inputs or SHAPE_KEY not in inputs:
        raise WireError(f"request needs inputs {DATA_KEY!r} and {SHAPE_KEY!r}, got {sorted(inputs)}")
    dtype = _text(inputs.get(DTYPE_KEY, b"float32")).strip() or "float32"
    if dtype != "float32":
        raise WireError(f"expected dtype float32, got {dtype}")
    try:
        shape = tuple(int(s) for s in _text(inputs[SHAPE_KEY]).split(","))
    except ValueError:
        raise WireError(f"bad shape {_text(inputs[SHAPE_KEY])!r}: expected decimal dims joined by ','") from None
    if any(d < 0 for d in shape):
        raise WireError(f"bad shape {list(shape)}: negative dimension")
    data = inputs[DATA_KEY]
    n = int(np.prod(shape)) if shape else 1
    if len(data) != 4 * n:
        raise WireError(f"shape {list(shape)} needs {4 * n} bytes of float32, got {len(data)}")
    return np.frombuffer(data, dtype=_F32).reshape(shape)


def encode_response(y: np.ndarray, inference_ns: int = 0, server: str = "") -> bytes:
    """An answer frame: ``CFT2`` naming ``server``, or ``CFT1`` when ``server`` is empty."""
    y = np.ascontiguousarray(y, dtype=_F32)
    dims = struct.pack(f"<{y.ndim}q", *y.shape)
    if not server:
        return b"".join((_HEAD.pack(OK_MAGIC, inference_ns, y.ndim), dims, y.tobytes()))
    name = server.encode("utf-8")
    return b"".join((_HEAD2.pack(OK_SERVER_MAGIC, inference_ns, y.ndim, len(name)), dims, y.tobytes(), name))


def encode_error(code: int, message: str) -> bytes:
    return _ERR.pack(ERR_MAGIC, code) + message.encode("utf-8", errors="replace")


def decode_response(body: bytes) -> tuple[np.ndarray, int, str]:
    """``(output, inference_ns, server)`` (``server`` "" for a ``CFT1`` frame); an error frame
    raises ``WireError`` subclass :class:`RemoteError` with its code."""
    magic = bytes(body[:4])
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
