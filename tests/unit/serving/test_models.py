"""The model zoo: architecture, parameter counts, ONNX export vs the numpy reference, build cache."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serving.models import (
    MODELS,
    OPSET,
    build_model,
    default_models_dir,
    load_weights,
    model_paths,
    param_count,
    reference_forward,
)
from serving.models import ffnn, resnet50
from serving.models.__main__ import main as cli_main

FFNN_PARAMS = 784 * 32 + 32 + 3 * (32 * 32 + 32) + 32 * 10 + 10
RESNET50_PARAMS = 25_530_472


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for name in MODELS:
        build_model(name, d, seed=42)
    return d


def _session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _inputs(name: str, batch: int, seed: int = 0) -> np.ndarray:
    spec = MODELS[name]
    return np.random.default_rng(seed).random((batch, *spec.input_shape), dtype=np.float32)


def test_specs():
    assert MODELS["ffnn"].input_shape == (1, 784) and MODELS["ffnn"].output_shape == (10,)
    assert MODELS["resnet50"].input_shape == (224, 224, 3) and MODELS["resnet50"].output_shape == (1000,)
    for spec in MODELS.values():
        assert (spec.input_name, spec.output_name, spec.input_dtype) == ("input_1", "output", "float32")


def test_ffnn_param_count(models_dir):
    assert FFNN_PARAMS == 28_618 == ffnn.PARAM_COUNT
    art = model_paths("ffnn", models_dir)
    w = load_weights(art.weights)
    assert param_count(w) == 28_618
    assert art.manifest["param_count"] == 28_618
    assert [w[f"dense{i}.w"].shape for i in range(5)] == [(784, 32), (32, 32), (32, 32), (32, 32), (32, 10)]
    model = onnx.load(str(art.onnx))
    assert sum(int(np.prod(t.dims)) for t in model.graph.initializer) == 28_618
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Gemm") == 5 and ops.count("Relu") == 4  # no activation after the last layer


def test_resnet50_param_count(models_dir):
    art = model_paths("resnet50", models_dir)
    assert art.manifest["param_count"] == RESNET50_PARAMS == resnet50.PARAM_COUNT
    w = load_weights(art.weights)
    assert param_count(w) == RESNET50_PARAMS
    convs = [k for k in w if k.endswith(".w") and w[k].ndim == 4]
    assert len(convs) == 53  # stem + 16 blocks x 3 + 4 projections
    assert w["conv1.w"].shape == (64, 3, 7, 7)
    assert w["layer2.0.conv2.w"].shape == (128, 128, 3, 3)  # v1.5: stride on the 3x3
    assert w["layer4.2.conv3.w"].shape == (2048, 512, 1, 1)
    assert w["fc.w"].shape == (2048, 1000)
    model = onnx.load(str(art.onnx), load_external_data=False)
    strided = {n.name for n in model.graph.node if n.op_type == "Conv"
               and list(next(a for a in n.attribute if a.name == "strides").ints) == [2, 2]}
    assert strided == {"conv1", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2",
                       "layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"}


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_valid_with_dynamic_batch(models_dir, name):
    art = model_paths(name, models_dir)
    onnx.checker.check_model(str(art.onnx))
    model = onnx.load(str(art.onnx))
    assert model.opset_import[0].version == OPSET
    (inp,), (out,) = model.graph.input, model.graph.output
    spec = MODELS[name]
    assert inp.name == spec.input_name and out.name == spec.output_name
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch" and out.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert tuple(d.dim_value for d in in_dims[1:]) == spec.input_shape
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("name,batch", [("ffnn", 1), ("ffnn", 32), ("resnet50", 1)])
def test_onnx_matches_reference(models_dir, name, batch):
    art = model_paths(name, models_dir)
    x = _inputs(name, batch, seed=batch)
    got = _session(art.onnx).run(["output"], {"input_1": x})[0]
    want = reference_forward(name, art.weights, x)
    assert got.shape == want.shape == (batch, *MODELS[name].output_shape)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_meaningful(models_dir, name):
    """Finite, O(1), not constant across classes, and input-dependent."""
    art = model_paths(name, models_dir)
    y = _session(art.onnx).run(None, {"input_1": _inputs(name, 2, seed=7)})[0]
    assert np.isfinite(y).all()
    assert 0.01 < np.abs(y).max() < 100
    assert (y.std(axis=1) > 1e-2).all()
    assert np.abs(y[0] - y[1]).max() > 1e-2  # far above the 1e-4 prediction-check tolerance


def test_dynamic_batch(models_dir):
    sess = _session(model_paths("ffnn", models_dir).onnx)
    x = _inputs("ffnn", 64, seed=3)
    full = sess.run(None, {"input_1": x})[0]
    for b in (1, 2, 7, 64):
        np.testing.assert_allclose(sess.run(None, {"input_1": x[:b]})[0], full[:b], rtol=1e-5, atol=1e-6)
    rsess = _session(model_paths("resnet50", models_dir).onnx)
    xr = _inputs("resnet50", 2, seed=4)
    two = rsess.run(None, {"input_1": xr})[0]
    one = rsess.run(None, {"input_1": xr[1:]})[0]
    assert two.shape == (2, 1000) and one.shape == (1, 1000)
    np.testing.assert_allclose(one[0], two[1], rtol=1e-4, atol=1e-4)


def test_build_cached_and_reproducible(tmp_path):
    a = build_model("ffnn", tmp_path, seed=1)
    stat = {p: p.stat() for p in (a.weights, a.onnx, a.manifest_path)}
    again = build_model("ffnn", tmp_path, seed=1)
    assert again == a
    for p, st in stat.items():  # nothing rewritten
        assert (p.stat().st_mtime_ns, p.stat().st_ino) == (st.st_mtime_ns, st.st_ino)

    m1 = a.manifest
    w1 = load_weights(a.weights)
    other = build_model("ffnn", tmp_path, seed=2)  # different seed: rebuilt in place
    m2 = other.manifest
    assert m2["seed"] == 2 and m2["files"]["weights"]["sha256"] != m1["files"]["weights"]["sha256"]
    assert m2["files"]["onnx"]["sha256"] != m1["files"]["onnx"]["sha256"]
    assert not np.array_equal(load_weights(other.weights)["dense0.w"], w1["dense0.w"])

    fresh = build_model("ffnn", tmp_path / "elsewhere", seed=1)  # same seed: identical bytes
    assert fresh.manifest["files"] == m1["files"]

    forced = build_model("ffnn", tmp_path / "elsewhere", seed=1, force=True)
    assert forced.manifest["files"] == m1["files"]


def test_build_repairs_corrupted_files(tmp_path):
    art = build_model("ffnn", tmp_path, seed=5)
    good = art.manifest["files"]["onnx"]["sha256"]
    art.onnx.write_bytes(b"garbage")
    build_model("ffnn", tmp_path, seed=5)
    assert art.manifest["files"]["onnx"]["sha256"] == good
    onnx.checker.check_model(str(art.onnx))


def test_manifest_contents(models_dir):
    m = json.loads(model_paths("resnet50", models_dir).manifest_path.read_text())
    assert m["seed"] == 42 and m["opset"] == OPSET and m["input_name"] == "input_1"
    assert m["input_shape"] == ["batch", 224, 224, 3] and m["output_shape"] == ["batch", 1000]
    assert set(m["files"]) == {"weights", "onnx"}
    for entry in m["files"].values():
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 90_000_000


def test_model_paths_and_default_dir(tmp_path, monkeypatch):
    art = model_paths("ffnn", tmp_path)
    assert art.model_dir == tmp_path / "ffnn"
    assert art.weights.name == "ffnn.npz" and art.onnx.name == "ffnn.onnx"
    assert not art.exists()
    monkeypatch.setenv("CRAYFISH_MODELS_DIR", str(tmp_path / "env"))
    assert default_models_dir() == tmp_path / "env"
    assert model_paths("resnet50").model_dir == tmp_path / "env" / "resnet50"
    monkeypatch.delenv("CRAYFISH_MODELS_DIR")
    assert default_models_dir().parts[-2:] == (".cache", "models")


def test_unknown_model_named():
    with pytest.raises(KeyError, match="vgg16"):
        model_paths("vgg16")
    with pytest.raises(KeyError, match="vgg16"):
        build_model("vgg16")


def test_reference_forward_rejects_wrong_shape(models_dir):
    with pytest.raises(ValueError, match="expected input"):
        reference_forward("ffnn", model_paths("ffnn", models_dir).weights, np.zeros((2, 784), np.float32))


def test_cli_build_and_list(tmp_path, capsys):
    assert cli_main(["build", "--model", "ffnn", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ffnn: 28,618 params" in out
    assert model_paths("ffnn", tmp_path).exists()
    assert not model_paths("resnet50", tmp_path).exists()
    assert cli_main(["list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "built (seed 42)" in out and "not built" in out
    with pytest.raises(SystemExit):
        cli_main(["build", "--model", "nope"])
    assert os.path.isdir(tmp_path)
