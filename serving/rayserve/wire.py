"""The HTTP wire format of the Ray Serve path, shared by the deployment (ray env) and the client
(core env). Imports neither ray nor grpc.

See :mod:`serving.rayserve` for the protocol description.
"""

from __future__ import annotations

import json
import math

import numpy as np

ROUTE_ROOT = "/models"            # every model is its own Serve application at ROUTE_ROOT/<name>
SCORE_PATH = "/score"             # POST, raw tensor in, raw tensor out
METADATA_PATH = "/metadata"       # GET, JSON description
HEALTH_PATH = "/health"           # GET, 200 when the replica has its model loaded

CONTENT_TYPE = "application/octet-stream"
H_SHAPE = "X-Crayfish-Shape"               # "1,1,784": C-order shape of the body (one tensor)
H_DTYPE = "X-Crayfish-Dtype"               # "float32" (default), or another of DTYPES
H_TENSORS = "X-Crayfish-Tensors"           # named tensors: JSON [[name, dtype, shape], ...] (no H_SHAPE)
H_INFERENCE_NS = "X-Crayfish-Inference-Ns"  # backend time inside the replica
H_QUEUE_NS = "X-Crayfish-Queue-Ns"          # wait for the replica's scorer (its one-at-a-time slot)
H_SERVER = "X-Crayfish-Server"              # "ray-serve 2.60.0"
H_ERROR = "X-Crayfish-Error"                # gRPC status name of an error answer, e.g. INVALID_ARGUMENT

# gRPC status name (what serving.errors.grpc_status gives) <-> HTTP status: the ONE table of the
# HTTP path, read in both directions (server: exception -> grpc_status -> HTTP; client: HTTP ->
# status name -> serving.errors.error_from_status).
HTTP_FOR_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
STATUS_FOR_HTTP: dict[int, str] = {v: k for k, v in HTTP_FOR_STATUS.items()}
# Ray's own proxy answers these without asking our deployment
STATUS_FOR_HTTP.update({408: "DEADLINE_EXCEEDED", 502: "UNAVAILABLE"})

DTYPE = np.dtype("<f4")
# every dtype the body may carry (the crayfish.v1.Tensor dtypes), little-endian
DTYPES: dict[str, np.dtype] = {n: np.dtype(n).newbyteorder("<") for n in (
    "float32", "float64", "float16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool")}


def route(model: str) -> str:
    """The Serve route prefix of a served model name."""
    return f"{ROUTE_ROOT}/{model}"


def format_shape(shape) -> str:
    return ",".join(str(int(d)) for d in shape)


def parse_shape(text: str | None) -> tuple[int, ...]:
    """``"1,1,784"`` -> ``(1, 1, 784)``; raises ValueError with a readable message."""
    if not text:
        raise ValueError(f"missing {H_SHAPE} header (e.g. '{H_SHAPE}: 1,1,784')")
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"bad {H_SHAPE} header {text!r}: expected comma-separated integers") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"bad {H_SHAPE} header {text!r}: negative dimension")
    return shape


def _dtype(name: str | None) -> np.dtype:
    dt = DTYPES.get((name or "").strip().lower())
    if dt is None:
        raise ValueError(f"unsupported dtype {name!r}; one of {', '.join(DTYPES)}")
    return dt


def decode(body: bytes, shape_header: str | None, dtype_header: str | None = None) -> np.ndarray:
    """Body + headers -> a read-only array (no copy; float32 unless ``dtype_header`` names
    another of :data:`DTYPES`); ValueError on any mismatch."""
    dt = DTYPE
    if dtype_header and dtype_header != "float32":
        dt = _dtype(dtype_header)
    shape = parse_shape(shape_header)
    need = math.prod(shape) * dt.itemsize
    if len(body) != need:
        raise ValueError(f"body has {len(body)} bytes, shape {list(shape)} of {dt.name} needs {need}")
    return np.frombuffer(body, dtype=dt).reshape(shape)


def encode(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An array -> (little-endian C-order bytes, headers naming shape and dtype): float32, or the
    array's own dtype where it is another of :data:`DTYPES` (anything else goes as float32)."""
    if x.dtype == DTYPE:       # the single-tensor path: as it always was
        data = np.require(x, dtype=DTYPE, requirements="C")
        return data.tobytes(), {H_SHAPE: format_shape(data.shape), H_DTYPE: "float32"}
    dt = DTYPES.get(x.dtype.name, DTYPE)
    data = np.require(x, dtype=dt, requirements="C")
    return data.tobytes(), {H_SHAPE: format_shape(data.shape), H_DTYPE: dt.name}


# -- named tensors (serving.models.spec): {name: array} both ways -------------------------------
# Body: the tensors' raw little-endian C-order bytes one after the other; H_TENSORS (JSON, ASCII)
# lists [name, dtype, shape] of each, in body order. No H_SHAPE: that is how either side tells a
# named body from a single tensor.

def encode_named(arrays) -> tuple[bytes, dict[str, str]]:
    """``{name: array}`` -> (body, headers)."""
    parts, meta = [], []
    for name, a in arrays.items():
        dt = DTYPES.get(a.dtype.name)
        if dt is None:
            raise ValueError(f"tensor {name!r}: unsupported dtype {a.dtype}; one of {', '.join(DTYPES)}")
        data = np.require(a, dtype=dt, requirements="C")
        parts.append(data.tobytes())
        meta.append([str(name), dt.name, [int(d) for d in data.shape]])
    return b"".join(parts), {H_TENSORS: json.dumps(meta, separators=(",", ":"))}


def decode_named(body: bytes, tensors_header: str) -> dict[str, np.ndarray]:
    """Body + :data:`H_TENSORS` -> ``{name: read-only array}`` (views of the body, no copy);
    ValueError on any mismatch."""
    try:
        meta = json.loads(tensors_header)
        items = [(str(n), _dtype(d), tuple(int(s) for s in shape)) for n, d, shape in meta]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad {H_TENSORS} header {tensors_header[:200]!r}: {exc} "
                         f"(expected JSON [[name, dtype, shape], ...])") from None
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, dt, shape in items:
        if any(d < 0 for d in shape):
            raise ValueError(f"tensor {name!r}: negative dimension in {list(shape)}")
        if name in out:
            raise ValueError(f"tensor {name!r} given twice")
        n = math.prod(shape)
        end = offset + n * dt.itemsize
        if end > len(body):
            raise ValueError(f"body has {len(body)} bytes, too few for tensor {name!r} "
                             f"({dt.name} {list(shape)} from byte {offset})")
        out[name] = np.frombuffer(body, dtype=dt, count=n, offset=offset).reshape(shape)
        offset = end
    if offset != len(body):
        raise ValueError(f"body has {len(body)} bytes, the tensors {[n for n, _, _ in items]} need {offset}")
    return out
