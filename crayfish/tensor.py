"""numpy arrays <-> crayfish.v1.Tensor: raw little-endian bytes in C order, shape and dtype kept."""

from __future__ import annotations

import math

import numpy as np

from crayfish.v1 import tensor_pb2

_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_INT8: np.dtype("i1"),
    tensor_pb2.DTYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_UINT8: np.dtype("u1"),
    tensor_pb2.DTYPE_UINT16: np.dtype("<u2"),
    tensor_pb2.DTYPE_UINT32: np.dtype("<u4"),
    tensor_pb2.DTYPE_UINT64: np.dtype("<u8"),
    tensor_pb2.DTYPE_BOOL: np.dtype("?"),
}
_BY_KIND: dict[tuple[str, int], int] = {(d.kind, d.itemsize): code for code, d in _DTYPES.items()}

DTYPE_NAMES: dict[str, int] = {
    "float32": tensor_pb2.DTYPE_FLOAT32, "float64": tensor_pb2.DTYPE_FLOAT64,
    "float16": tensor_pb2.DTYPE_FLOAT16, "int8": tensor_pb2.DTYPE_INT8, "int16": tensor_pb2.DTYPE_INT16,
    "int32": tensor_pb2.DTYPE_INT32, "int64": tensor_pb2.DTYPE_INT64, "uint8": tensor_pb2.DTYPE_UINT8,
    "uint16": tensor_pb2.DTYPE_UINT16, "uint32": tensor_pb2.DTYPE_UINT32,
    "uint64": tensor_pb2.DTYPE_UINT64, "bool": tensor_pb2.DTYPE_BOOL,
}


class TensorError(ValueError):
    """A Tensor message that cannot be turned into an array (unknown dtype, size mismatch)."""


def dtype_code(dtype: np.dtype | str) -> int:
    dt = np.dtype(dtype)
    try:
        return _BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        raise TensorError(f"unsupported dtype {dt}") from None


def numpy_dtype(code: int) -> np.dtype:
    try:
        return _DTYPES[code]
    except KeyError:
        raise TensorError(f"unknown tensor dtype code {code}") from None


def to_tensor(array: np.ndarray, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Fill (or create) a Tensor from an array; converts to little-endian C order if needed."""
    code = dtype_code(array.dtype)
    wire = _DTYPES[code]
    data = np.require(array, dtype=wire, requirements="C")
    msg = out if out is not None else tensor_pb2.Tensor()
    msg.dtype = code
    msg.shape[:] = data.shape
    msg.data = data.tobytes()
    return msg


def from_tensor(msg: tensor_pb2.Tensor) -> np.ndarray:
    """A read-only array view over the Tensor's bytes (no copy)."""
    dt = _DTYPES.get(msg.dtype)
    if dt is None:
        raise TensorError(f"unknown tensor dtype code {msg.dtype}")
    shape = tuple(msg.shape)
    count = math.prod(shape)
    if count < 0 or min(shape, default=0) < 0:
        raise TensorError(f"negative dimension in shape {shape}")
    if len(msg.data) != count * dt.itemsize:
        raise TensorError(
            f"tensor data has {len(msg.data)} bytes, shape {shape} of {dt.name} needs {count * dt.itemsize}")
    return np.frombuffer(msg.data, dtype=dt, count=count).reshape(shape)


# -- named tensors (DataBatch.inputs, ScoredBatch.outputs, ScoreRequest.inputs, ...) -------------

def arrays_from(named) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``map<string, Tensor>`` field (read-only views, no copy)."""
    return {name: from_tensor(t) for name, t in named.items()}


def fill_named(named, arrays) -> None:
    """Write ``{name: array}`` into a ``map<string, Tensor>`` field."""
    for name, a in arrays.items():
        to_tensor(a, named[name])


def feed_rows(x) -> int:
    """Rows (batch axis) of a feed: an array, or a ``{name: array}`` dict sharing the batch axis."""
    if isinstance(x, dict):
        return next(iter(x.values())).shape[0]
    return x.shape[0]


def concat_feeds(xs: list):
    """Feeds stacked along the batch axis (per name for dicts)."""
    if len(xs) == 1:
        return xs[0]
    if isinstance(xs[0], dict):
        return {k: np.concatenate([x[k] for x in xs], axis=0) for k in xs[0]}
    return np.concatenate(xs, axis=0)


def slice_feeds(x, start: int, stop: int):
    """Rows ``start:stop`` of a feed (per name for dicts)."""
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]
