"""Embedded scorers with the real onnxruntime: predictions, shapes, timing, option and input errors."""

from __future__ import annotations

import json
import sys
import time
import types

import numpy as np
import onnxruntime as ort
import pytest

from serving.embedded import (
    BACKENDS,
    NoopScorer,
    OnnxRuntimeScorer,
    Scorer,
    ScorerConfigError,
    ScoringError,
    SleepScorer,
    backend,
    create_scorer,
    registry,
)
from serving.embedded.check import check
from serving.models import MODELS, build_model, model_paths, reference_forward


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for name in MODELS:
        build_model(name, d, seed=42)
    return d


def _x(name: str, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *MODELS[name].input_shape), dtype=np.float32)


def test_registry():
    assert {"onnxruntime", "noop", "sleep"} <= set(BACKENDS)
    assert BACKENDS["onnxruntime"] is OnnxRuntimeScorer
    assert BACKENDS["noop"] is NoopScorer and BACKENDS["sleep"] is SleepScorer
    assert all(issubclass(c, Scorer) and c.name == k for k, c in BACKENDS.items())


# ------------------------------------------------------------------------------ onnxruntime

@pytest.mark.parametrize("name,batch", [("ffnn", 1), ("ffnn", 32), ("resnet50", 1)])
def test_onnxruntime_matches_reference(models_dir, name, batch):
    x = _x(name, batch, seed=10 + batch)
    with create_scorer("onnxruntime", name, models_dir) as s:
        assert s.name == "onnxruntime"
        assert s.options == {"intra_op_threads": 1, "inter_op_threads": 1, "device": "cpu",
                             "graph_optimization": "all"}
        got = s.score(x)
    want = reference_forward(name, model_paths(name, models_dir).weights, x)
    assert got.shape == (batch, *MODELS[name].output_shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_onnxruntime_dynamic_batch_and_repeat(models_dir):
    s = create_scorer("onnxruntime", "ffnn", models_dir)
    x = _x("ffnn", 16, seed=2)
    full = s.score(x)
    for b in (1, 3, 16):
        np.testing.assert_allclose(s.score(x[:b]), full[:b], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(s.score(x), full)  # deterministic across calls
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]       # non-contiguous view, same values
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(s.score(strided), full)
    s.warmup(batch_size=4)
    json.dumps(s.describe())
    assert s.describe()["providers"] == ["CPUExecutionProvider"]
    s.close()


def test_onnxruntime_options(models_dir):
    s = create_scorer("onnxruntime", "ffnn", models_dir, intra_op_threads="2", inter_op_threads=0,
                      graph_optimization="basic", device="CPU")
    assert s.options["intra_op_threads"] == 2 and s.options["inter_op_threads"] == 0
    assert s.score(_x("ffnn", 2)).shape == (2, 10)
    s.close()
    # direct construction, as the workers may do it
    s = OnnxRuntimeScorer(MODELS["ffnn"], model_paths("ffnn", models_dir))
    assert s.score(_x("ffnn", 1)).shape == (1, 10)
    s.close()


def test_onnxruntime_cuda_without_gpu_build_is_a_clear_error(models_dir):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        s = create_scorer("onnxruntime", "ffnn", models_dir, device="cuda")
        assert s.score(_x("ffnn", 1)).shape == (1, 10)
        s.close()
        return
    with pytest.raises(ValueError, match="device 'cuda' needs ONNX Runtime's CUDA execution provider"):
        create_scorer("onnxruntime", "ffnn", models_dir, device="cuda")


def test_onnxruntime_rejects_unknown_devices(models_dir):
    with pytest.raises(ValueError, match="device 'tpu'; use cpu or cuda"):
        create_scorer("onnxruntime", "ffnn", models_dir, device="tpu")


def test_onnxruntime_model_not_built(tmp_path):
    with pytest.raises(ScorerConfigError, match=r"'ffnn' is not built.*python -m serving.models build"):
        create_scorer("onnxruntime", "ffnn", tmp_path)


# ------------------------------------------------------------------------------- noop/sleep

@pytest.mark.parametrize("name", list(MODELS))
def test_noop_shapes(tmp_path, name):
    s = create_scorer("noop", name, tmp_path)  # needs no built model
    for b in (1, 5):
        y = s.score(_x(name, b))
        assert y.shape == (b, *MODELS[name].output_shape) and y.dtype == np.float32
        assert not y.any()


@pytest.mark.parametrize("name", list(MODELS))
def test_sleep_shapes(tmp_path, name):
    s = create_scorer("sleep", name, tmp_path, delay_ms=0)
    y = s.score(_x(name, 3))
    assert y.shape == (3, *MODELS[name].output_shape) and y.dtype == np.float32 and not y.any()


# How close the sleep backend gets to its delay (its overshoot) is a performance figure of the host:
# `make bench` measures it (benchmarks/serving.py, part 5d). What is checked here cannot be broken by
# a slow or loaded machine: the call never returns before its delay (a busy host only makes it later).

@pytest.mark.parametrize("delay_ms, calls", [(50, 5), ("0.3", 20)])
def test_sleep_never_returns_before_its_delay(delay_ms, calls):
    s = create_scorer("sleep", "ffnn", delay_ms=delay_ms)
    x = _x("ffnn", 1)
    took_ns = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        s.score(x)
        took_ns.append(time.perf_counter_ns() - t0)
    assert min(took_ns) >= float(delay_ms) * 1e6, took_ns


# ------------------------------------------------------------------------- config errors

@pytest.mark.parametrize("backend,model,options,needle", [
    ("tensorflow", "ffnn", {}, "'tensorflow'"),
    ("onnxruntime", "vgg16", {}, "'vgg16'"),
    ("onnxruntime", "ffnn", {"intra_threads": 1}, "'intra_threads'"),
    ("noop", "ffnn", {"delay_ms": 5}, "'delay_ms'"),
    ("sleep", "ffnn", {"delay_ms": 5, "jitter": 1}, "'jitter'"),
    ("sleep", "ffnn", {}, "'delay_ms' is required"),
    ("sleep", "ffnn", {"delay_ms": -1}, "'delay_ms' must be >= 0"),
    ("sleep", "ffnn", {"delay_ms": "soon"}, "'delay_ms'"),
    ("onnxruntime", "ffnn", {"intra_op_threads": -2}, "'intra_op_threads' must be >= 0"),
    ("onnxruntime", "ffnn", {"intra_op_threads": 1.5}, "'intra_op_threads'"),
    ("onnxruntime", "ffnn", {"graph_optimization": "max"}, "'graph_optimization' must be one of"),
])
def test_config_errors_name_the_culprit(tmp_path, backend, model, options, needle):
    # option errors come before any file access: tmp_path has no models in it
    with pytest.raises(ScorerConfigError, match=needle) as ei:
        create_scorer(backend, model, tmp_path, **options)
    assert isinstance(ei.value, ValueError)


def test_unknown_backend_lists_available():
    with pytest.raises(ScorerConfigError, match="noop, onnxruntime, savedmodel, sleep, torchscript"):
        create_scorer("torch", "ffnn")


# --------------------------------------------------------------------------- input errors

@pytest.fixture(scope="module")
def ort_ffnn(models_dir):
    s = create_scorer("onnxruntime", "ffnn", models_dir)
    yield s
    s.close()


@pytest.mark.parametrize("bad", [
    np.zeros((2, 784), np.float32),            # missing the middle axis
    np.zeros((2, 1, 783), np.float32),         # wrong width
    np.zeros((1, 784), np.float32).reshape(784),  # no batch axis
    np.zeros((2, 1, 784), np.float64),         # wrong dtype
    np.zeros((2, 1, 784), np.float16),
    np.zeros((2, 1, 784), ">f4"),              # big-endian float32 is not what ORT takes
    np.zeros((0, 1, 784), np.float32),         # empty batch
    np.float32(1.0),
])
@pytest.mark.parametrize("backend", ["onnxruntime", "noop", "sleep"])
def test_scoring_error_on_bad_input(models_dir, ort_ffnn, backend, bad):
    s = ort_ffnn if backend == "onnxruntime" else \
        create_scorer(backend, "ffnn", **({"delay_ms": 0} if backend == "sleep" else {}))
    with pytest.raises(ScoringError, match=r"expected float32 \[b>=1, 1, 784\], got"):
        s.score(bad)


def test_scoring_error_on_non_array(ort_ffnn):
    with pytest.raises(ScoringError, match="expected a numpy array, got list"):
        ort_ffnn.score([[0.0] * 784])


def test_resnet_shape_error_message(tmp_path):
    s = create_scorer("noop", "resnet50", tmp_path)
    with pytest.raises(ScoringError) as ei:
        s.score(np.zeros((1, 3, 224, 224), np.float32))  # NCHW instead of NHWC
    assert str(ei.value) == "resnet50: expected float32 [b>=1, 224, 224, 3], got float32 [1, 3, 224, 224]"


# ------------------------------------------------------------------------------ lifecycle

@pytest.mark.parametrize("backend,options", [("onnxruntime", {}), ("noop", {}), ("sleep", {"delay_ms": 0})])
def test_close(models_dir, backend, options):
    s = create_scorer(backend, "ffnn", models_dir, **options)
    s.score(_x("ffnn", 1))
    s.close()
    s.close()  # idempotent
    assert s.closed
    with pytest.raises(RuntimeError, match="closed"):
        s.score(_x("ffnn", 1))


def test_backend_modules_register_their_scorers(monkeypatch, tmp_path):
    """A module listed in BACKEND_MODULES registers the classes of its SCORERS; a second class under
    a taken name is refused, naming the first."""
    class Doubler(Scorer):
        name = "test-doubler"
        needs_artifacts = False

        def _score(self, x):
            return np.full((x.shape[0], *self._out_shape), 2.0, np.float32)

    class Impostor(Doubler):
        pass

    module = types.ModuleType("crayfish_test_backends")
    module.SCORERS = (Doubler,)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(registry, "BACKEND_MODULES", [*registry.BACKEND_MODULES, module.__name__])
    assert BACKENDS["test-doubler"] is Doubler and backend("test-doubler") is Doubler
    s = create_scorer("test-doubler", "ffnn", tmp_path)
    assert (s.score(_x("ffnn", 2)) == 2.0).all()
    with pytest.raises(ScorerConfigError, match="has no option 'x'; its options: none"):
        create_scorer("test-doubler", "ffnn", x=1)
    module.SCORERS = (Doubler, Impostor)
    with pytest.raises(ValueError, match="taken"):
        create_scorer("test-doubler", "ffnn", tmp_path)
    monkeypatch.undo()
    assert "test-doubler" not in BACKENDS


# --------------------------------------------------------------- what the runner asks of a backend

@pytest.mark.parametrize("name,environment,exporter,options", [
    ("onnxruntime", "core", None, {"intra_op_threads": 2, "inter_op_threads": 3, "device": "cuda"}),
    ("torchscript", "torch", "serving.models.export_torch", {"threads": 2, "interop_threads": 3, "device": "cuda"}),
    ("savedmodel", "tensorflow", "serving.models.export_tf",
     {"intra_op_threads": 2, "inter_op_threads": 3, "device": "cuda"}),
    ("sleep", "core", None, {"delay_ms": 7.5}),
    ("noop", "core", None, {}),
])
def test_backend_declarations(name, environment, exporter, options):
    """Each backend's own module says where it runs, what writes its files and how the
    experiment's serving fields map to its options -- and those options are ones it accepts."""
    b = backend(name)
    assert (b.environment, b.exporter) == (environment, exporter)
    got = b.options_from(threads=2, inter_threads=3, device="cuda", delay_ms=7.5)
    assert got == options
    resolved = b.resolve_options(got)  # raises unless every mapped option is one of its OPTIONS
    assert {k: resolved[k] for k in got} == got


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ScorerConfigError, match="unknown backend 'torch'; available backends: noop"):
        backend("torch")


def test_export_without_exporter_writes_nothing(tmp_path):
    backend("onnxruntime").export("ffnn", tmp_path, log=lambda line: pytest.fail(line))
    assert not any(tmp_path.iterdir())


def test_check_against_the_reference(models_dir):
    errors = check("onnxruntime", "ffnn", models_dir, batches=(1, 4))
    assert set(errors) == {"batch=1", "batch=4"} and max(errors.values()) <= 1e-4
    with pytest.raises(AssertionError, match="max abs error"):
        check("noop", "ffnn", models_dir)   # zeros are not the model
