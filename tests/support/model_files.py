"""Model files "trained elsewhere": small ONNX graphs built here with real (non-seeded-zoo) weights,
not ones of the built-in zoo, to run the path a user's own model file takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def two_layer_onnx(path: Path, n_in: int = 6, hidden: int = 5, n_out: int = 3, seed: int = 7,
                   input_name: str = "features", output_name: str = "scores",
                   free_item_axis: bool = False, extra_input: bool = False, batch_axis: str | int = "batch",
                   extra_output: bool = False, mask_type: int = TensorProto.INT64) -> Path:
    """``input_name`` float32 [batch, n_in] -> Gemm -> Relu -> Gemm -> ``output_name`` [batch, n_out].

    ``free_item_axis``: the item axis left symbolic too (the file does not say its size);
    ``extra_input``: a second input (``mask`` int64 [batch, n_in]) that the graph multiplies in;
    ``batch_axis``: the first axis, symbolic by default (an int fixes it, as some exporters do);
    ``extra_output``: a second output, ``label`` int64 [batch] = argmax of the scores;
    ``mask_type``: the mask's element type (a string mask is left unused: a type no path serves).
    """
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (n_in, hidden)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, (hidden,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.5, (hidden, n_out)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, (n_out,)).astype(np.float32), "b2")]
    item = "n" if free_item_axis else n_in
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch_axis, item])]
    nodes, x = [], input_name
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", mask_type, ["batch", item]))
        if mask_type != TensorProto.STRING:
            nodes += [helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
                      helper.make_node("Mul", [input_name, "maskf"], ["masked"])]
            x = "masked"
    nodes += [helper.make_node("Gemm", [x, "w1", "b1"], ["h"]),
              helper.make_node("Relu", ["h"], ["hr"]),
              helper.make_node("Gemm", ["hr", "w2", "b2"], [output_name])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_axis, n_out])]
    if extra_output:
        nodes.append(helper.make_node("ArgMax", [output_name], ["label"], axis=1, keepdims=0))
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, [batch_axis]))
    graph = helper.make_graph(nodes, "trained-elsewhere", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def forward(path: Path, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The graph's answer computed with numpy from the file's own weights (an independent check)."""
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    x = x.astype(np.float32) * (1 if mask is None else mask.astype(np.float32))
    h = np.maximum(x @ w["w1"] + w["b1"], 0)
    return h @ w["w2"] + w["b2"]


def masked_feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of ``two_layer_onnx(..., extra_input=True)``: features float32 and a 0/1 int64 mask."""
    rng = np.random.default_rng(seed)
    return {"features": rng.random((batch, 6), dtype=np.float32),
            "mask": rng.integers(0, 2, (batch, 6), dtype=np.int64)}


def assert_masked(out, x, models_dir, name: str = "masked") -> None:
    """``out`` is the two-output answer (scores float32, label int64) the model file's reference gives."""
    from serving.models import reference_predictions

    ref = reference_predictions(name, models_dir, x)
    assert isinstance(out, dict) and set(out) == {"scores", "label"}, out
    assert out["scores"].dtype == np.float32 and out["scores"].shape == (len(x["mask"]), 3)
    assert out["label"].dtype == np.int64 and out["label"].shape == (len(x["mask"]),)
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out["label"], ref["label"])


def masked_models_dir(d: Path) -> Path:
    """A models dir of a test module's own: the FFNN (the shared seed) and the imported two-input
    model file ``masked`` (nothing written into the shared .cache/models)."""
    from serving.models import build_model, import_model_file

    build_model("ffnn", d, seed=42)
    f = two_layer_onnx(d / "masked-src.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    import_model_file(f, d, "masked", {"mask": {"range": [0, 2]}})
    return d


def assert_named_refusals(client, models_dir, missing: str | None = "mask", shape: str | None = "mask") -> None:
    """Named inputs that do not fit ``masked`` are BadInputError (an int32 mask, a missing input, a
    wrong item shape; ``missing`` / ``shape``: what the message must say, None: anything), and the
    client still scores a good batch afterwards."""
    import pytest

    from serving.errors import BadInputError

    x = masked_feeds(2)
    with pytest.raises(BadInputError, match="mask"):                   # int32 instead of int64
        client.score({**x, "mask": x["mask"].astype(np.int32)})
    with pytest.raises(BadInputError, match=missing):                  # an input missing
        client.score({"features": x["features"]})
    with pytest.raises(BadInputError, match=shape):                    # a wrong item shape
        client.score({**x, "mask": np.zeros((2, 5), dtype=np.int64)})
    assert_masked(client.score(x).output, x, models_dir)              # still serving
