"""The HTTP wire format of the Ray Serve path, shared by the deployment (ray env) and the client
(core env). Imports neither ray nor grpc.

See :mod:`serving.rayserve` for the protocol description.
"""

from __future__ import annotations

import math

import numpy as np

ROUTE_ROOT = "/models"            # every model is its own Serve application at ROUTE_ROOT/<name>
SCORE_PATH = "/score"             # POST, raw tensor in, raw tensor out
METADATA_PATH = "/metadata"       # GET, JSON description
HEALTH_PATH = "/health"           # GET, 200 when the replica has its model loaded

CONTENT_TYPE = "application/octet-stream"
H_SHAPE = "X-Crayfish-Shape"               # "1,1,784": C-order shape of the body
H_DTYPE = "X-Crayfish-Dtype"               # "float32" (the only dtype the models take)
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


def decode(body: bytes, shape_header: str | None, dtype_header: str | None = None) -> np.ndarray:
    """Body + headers -> a read-only float32 array (no copy); ValueError on any mismatch."""
    if dtype_header and dtype_header.strip().lower() != "float32":
        raise ValueError(f"unsupported {H_DTYPE} {dtype_header!r}: only float32")
    shape = parse_shape(shape_header)
    need = math.prod(shape) * DTYPE.itemsize
    if len(body) != need:
        raise ValueError(f"body has {len(body)} bytes, shape {list(shape)} of float32 needs {need}")
    return np.frombuffer(body, dtype=DTYPE).reshape(shape)


def encode(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An array -> (little-endian C-order float32 bytes, headers naming shape and dtype)."""
    data = np.require(x, dtype=DTYPE, requirements="C")
    return data.tobytes(), {H_SHAPE: format_shape(data.shape), H_DTYPE: "float32"}
