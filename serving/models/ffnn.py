"""The Crayfish FFNN: ``[b, 1, 784] -> 784-32-32-32-32-10 -> [b, 10]``.

Four hidden Dense layers of 32 units with ReLU and a linear 10-unit output layer, exactly as the
original Crayfish's Keras model (28,618 parameters). Weight keys: ``dense0`` .. ``dense4``, each
with ``.w`` ``[in, out]`` and ``.b`` ``[out]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from serving.models.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

SPEC = ModelSpec(
    name="ffnn",
    input_shape=(1, 784),
    input_dtype="float32",
    output_shape=(10,),
    description="Crayfish FFNN: 784-32-32-32-32-10, ReLU hidden layers, linear output (28,618 parameters).",
)
LAYERS: tuple[tuple[int, int], ...] = ((784, 32), (32, 32), (32, 32), (32, 32), (32, 10))
PARAM_COUNT = sum(i * o + o for i, o in LAYERS)  # 28,618


def layer_names() -> list[str]:
    return [f"dense{i}" for i in range(len(LAYERS))]


def init_weights(seed: int) -> dict[str, np.ndarray]:
    """He-normal kernels for the ReLU layers, LeCun-normal for the linear output; small biases."""
    rng = np.random.default_rng([seed, 0xFF22])
    out: dict[str, np.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(LAYERS):
        last = i == len(LAYERS) - 1
        std = np.sqrt((1.0 if last else 2.0) / fan_in)
        out[f"dense{i}.w"] = (rng.standard_normal((fan_in, fan_out)) * std).astype(np.float32)
        out[f"dense{i}.b"] = rng.uniform(-0.1, 0.1, fan_out).astype(np.float32)
    return out


def to_onnx(weights: Mapping[str, np.ndarray], opset: int, doc: str = "") -> onnx.ModelProto:
    # onnx only to export: scorers import this module in environments without onnx (triton)
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info(SPEC.input_name, TensorProto.FLOAT, ["batch", *SPEC.input_shape])
    outp = helper.make_tensor_value_info(SPEC.output_name, TensorProto.FLOAT, ["batch", *SPEC.output_shape])
    nodes = [helper.make_node("Flatten", [SPEC.input_name], ["flat"], axis=1, name="flatten")]
    inits = []
    prev = "flat"
    n = len(LAYERS)
    for i, name in enumerate(layer_names()):
        w, b = f"{name}.w", f"{name}.b"
        inits += [numpy_helper.from_array(np.asarray(weights[w], np.float32), w),
                  numpy_helper.from_array(np.asarray(weights[b], np.float32), b)]
        last = i == n - 1
        y = SPEC.output_name if last else f"{name}.gemm"
        nodes.append(helper.make_node("Gemm", [prev, w, b], [y], name=f"{name}/gemm"))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"{name}.relu"], name=f"{name}/relu"))
            prev = f"{name}.relu"
    graph = helper.make_graph(nodes, "crayfish_ffnn", [inp], [outp], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="crayfish-mesh", doc_string=doc)


def forward(weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """float32 numpy forward pass: ``x`` ``[b, 1, 784]`` -> ``[b, 10]``."""
    h = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
    n = len(LAYERS)
    for i, name in enumerate(layer_names()):
        h = h @ weights[f"{name}.w"] + weights[f"{name}.b"]
        if i < n - 1:
            np.maximum(h, 0.0, out=h)
    return h.astype(np.float32, copy=False)
