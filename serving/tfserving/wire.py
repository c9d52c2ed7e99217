"""TF Serving wire format shared by our PredictionService servicer and the ``tf-serving`` client:
the generated stubs (imported on first use) and numpy <-> ``tensorflow.TensorProto``.

Where the stubs come from
-------------------------
``tensorflow_serving.apis`` (``tensorflow-serving-api``) imports ``tensorflow.core.framework``
protos, i.e. the ``tensorflow`` package. Two ways to have both:

- the ``tensorflow`` environment (``envs/tensorflow``): TensorFlow 2.21 + tensorflow-serving-api
  2.21. Importing the stubs there imports all of TensorFlow (several seconds, a few hundred MB);
- any environment *without* TensorFlow: ``tensorflow-protobuf==2.11.0`` (pure Python, 160 KB,
  depends only on ``protobuf``) ships the TensorFlow and TF Serving ``*_pb2`` / ``*_pb2_grpc``
  modules, and they load under protobuf 6.33. Its API protos are TF Serving 2.11's (Predict and
  GetModelMetadata are unchanged since); its ``ModelService`` stubs do not load (they need
  ``tensorflow.tsl`` protos it lacks), so there the client's ``health()`` asks GetModelMetadata. It installs a stub top-level
  ``tensorflow`` package (empty ``__init__``): never install it next to real TensorFlow (it
  would overwrite TensorFlow's ``__init__.py``), and code that probes ``import tensorflow``
  is fooled by it.

Tensors
-------
Requests and responses carry tensors with the raw little-endian bytes in ``tensor_content`` (not
``float_val`` lists: one memcpy instead of a repeated-field encode): ``DT_FLOAT`` for float32 (the
single-tensor path), and for named tensors every DataType of a ``crayfish.v1.Tensor`` dtype
(``DT_INT64``, ``DT_BOOL``, ``DT_INT32``, ``DT_DOUBLE``, ...; TensorFlow's bool is one byte).
:func:`to_array` also accepts the typed value lists (``float_val``, ``int64_val``, ``bool_val``,
... : what ``tf.make_tensor_proto`` of a Python list, or TF Serving's REST path, produces),
including TensorFlow's one-value broadcast.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from serving.errors import BadInputError

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
SERVED_VERSION = 1  # the one model version our servicer serves (TF Serving: the newest numbered dir)

# gRPC trailing metadata our servicer sets on every Predict answer; real TF Serving sets none of
# them, which is how the client tells who answered.
MD_SERVER = "crayfish-server"
MD_INFERENCE_NS = "crayfish-inference-ns"
MD_QUEUE_NS = "crayfish-queue-ns"
MD_BACKEND = "crayfish-backend"

_LE_F32 = np.dtype("<f4")
_pb: SimpleNamespace | None = None


def protos() -> SimpleNamespace:
    """The generated modules (``predict_pb2``, ``prediction_service_pb2_grpc``,
    ``get_model_metadata_pb2``, ``get_model_status_pb2``, ``model_service_pb2_grpc``,
    ``tensor_pb2``, ``types_pb2``, ``meta_graph_pb2``); ImportError with the fix otherwise.
    The two ModelService modules are None where they cannot load (tensorflow-protobuf 2.11)."""
    global _pb
    if _pb is None:
        try:
            # lazy: pulls in all of TensorFlow where it is installed (module docstring)
            from tensorflow.core.framework import tensor_pb2, types_pb2
            from tensorflow.core.protobuf import meta_graph_pb2
            from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc
        except ImportError as exc:
            raise ImportError(
                f"the TF Serving protocol needs the tensorflow_serving stubs ({exc}): run in the "
                f"'tensorflow' environment (`crayfish env build tensorflow`; python_for('tensorflow')), "
                f"or install tensorflow-protobuf==2.11.0 in an environment without TensorFlow "
                f"(see serving/tfserving/wire.py)") from exc
        try:
            # lazy, as above; ModelService: tensorflow-protobuf 2.11 lacks tensorflow/tsl (error codes) for it
            from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
        except ImportError:
            get_model_status_pb2 = model_service_pb2_grpc = None
        _pb = SimpleNamespace(
            tensor_pb2=tensor_pb2, types_pb2=types_pb2, meta_graph_pb2=meta_graph_pb2,
            predict_pb2=predict_pb2, prediction_service_pb2_grpc=prediction_service_pb2_grpc,
            get_model_metadata_pb2=get_model_metadata_pb2, get_model_status_pb2=get_model_status_pb2,
            model_service_pb2_grpc=model_service_pb2_grpc)
    return _pb


# numpy dtype name <-> tensorflow.DataType (what describe() reports)
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
                7: "string", 9: "int64", 10: "bool", 19: "float16", 14: "bfloat16",
                17: "uint16", 22: "uint32", 23: "uint64"}
DT_FLOAT = 1
# the DataTypes a tensor may carry here (the crayfish.v1.Tensor dtypes): the little-endian numpy
# dtype of its tensor_content, and the typed field TensorFlow fills instead (tf.make_tensor_proto)
_NUMPY: dict[int, np.dtype] = {code: np.dtype(_DTYPE_NAMES[code]).newbyteorder("<")
                               for code in (1, 2, 3, 4, 5, 6, 9, 10, 17, 19, 22, 23)}
_CODE_OF: dict[str, int] = {dt.name: code for code, dt in _NUMPY.items()}
_VAL_FIELD = {1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val", 6: "int_val",
              9: "int64_val", 10: "bool_val", 17: "int_val", 19: "half_val", 22: "uint32_val",
              23: "uint64_val"}


def dtype_name(dt: int) -> str:
    return _DTYPE_NAMES.get(dt) or protos().types_pb2.DataType.Name(dt)


def dtype_enum(name: str) -> int:
    for k, v in _DTYPE_NAMES.items():
        if v == name:
            return k
    raise ValueError(f"no TensorFlow DataType for {name!r}")


def shape_of(shape_proto: Any) -> list[int] | None:
    """``TensorShapeProto`` -> list of sizes (-1 for unknown), or None for unknown rank."""
    if shape_proto.unknown_rank:
        return None
    return [d.size for d in shape_proto.dim]


def set_shape(shape_proto: Any, shape) -> None:
    del shape_proto.dim[:]
    for s in shape:
        shape_proto.dim.add().size = -1 if s is None else int(s)


def to_tensor(a: np.ndarray, out: Any) -> Any:
    """Fill ``out`` (a ``TensorProto``) with ``a``: its DataType (DT_FLOAT for float32), shape, raw
    little-endian ``tensor_content``. ValueError for a dtype TensorFlow has no DataType for here."""
    if a.dtype == _LE_F32:
        out.dtype = DT_FLOAT
        data = np.ascontiguousarray(a, dtype=_LE_F32)
    else:
        code = _CODE_OF.get(a.dtype.name)
        if code is None:
            raise ValueError(f"no TensorFlow DataType carries {a.dtype} here; one of {', '.join(_CODE_OF)}")
        out.dtype = code
        data = np.ascontiguousarray(a, dtype=_NUMPY[code])
    set_shape(out.tensor_shape, data.shape)
    out.tensor_content = data.tobytes()
    return out


def _shape(t: Any, what: str) -> tuple[list[int], int]:
    shape = shape_of(t.tensor_shape)
    if shape is None or any(s < 0 for s in shape):
        raise BadInputError(f"{what}: tensor_shape must be fully known, got {shape}")
    return shape, math.prod(shape)


def to_array(t: Any, what: str = "tensor") -> np.ndarray:
    """A ``TensorProto`` -> ndarray of its dtype (read-only view of ``tensor_content`` when
    present; DT_FLOAT -> float32, DT_INT64 -> int64, DT_BOOL -> bool, ...). An unsupported
    DataType or inconsistent content is a :class:`BadInputError` naming ``what``."""
    if t.dtype != DT_FLOAT:
        return _other_to_array(t, what)
    shape, n = _shape(t, what)
    content = t.tensor_content
    if content:
        if len(content) != 4 * n:
            raise BadInputError(f"{what}: tensor_content has {len(content)} bytes, shape {shape} "
                                f"needs {4 * n}")
        return np.frombuffer(content, dtype=_LE_F32).reshape(shape)
    vals = t.float_val
    if len(vals) == n:
        return np.asarray(vals, dtype=np.float32).reshape(shape)
    if len(vals) == 1:  # TensorFlow's broadcast of a single value
        return np.full(shape, vals[0], dtype=np.float32)
    raise BadInputError(f"{what}: {len(vals)} float_val values for shape {shape} ({n} elements)")


def _other_to_array(t: Any, what: str) -> np.ndarray:
    dt = _NUMPY.get(t.dtype)
    if dt is None:
        raise BadInputError(f"{what}: dtype {dtype_name(t.dtype)} ({t.dtype}) is not supported; "
                            f"supported: {', '.join(_CODE_OF)}")
    shape, n = _shape(t, what)
    content = t.tensor_content
    if content:
        if len(content) != dt.itemsize * n:
            raise BadInputError(f"{what}: tensor_content has {len(content)} bytes, shape {shape} of "
                                f"{dt.name} needs {dt.itemsize * n}")
        return np.frombuffer(content, dtype=dt).reshape(shape)
    field = _VAL_FIELD[t.dtype]
    vals = getattr(t, field)
    if t.dtype == 19:       # half_val holds the float16 bit patterns
        vals = np.asarray(vals, dtype=np.uint16).view(np.float16)
    if len(vals) == n:
        return np.asarray(vals).astype(dt, copy=False).reshape(shape)
    if len(vals) == 1:  # TensorFlow's broadcast of a single value
        return np.full(shape, np.asarray(vals).astype(dt)[0], dtype=dt)
    raise BadInputError(f"{what}: {len(vals)} {field} values for shape {shape} ({n} elements)")
