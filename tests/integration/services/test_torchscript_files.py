"""A TorchScript file of one's own (``model: {path: m.pt}``): read by libtorch in the torch
environment (its inputs' dtypes and shapes given in the experiment), embedded with the torchscript
backend and behind our Scoring server, every prediction checked against torch on the CPU on the
same file; every refusal one line naming the file and the input."""

from __future__ import annotations

import numpy as np
import pytest

from services.runner.experiment import Experiment, format_validation_error
from services.runner.experiments import run_experiment
from serving.models import import_model_file, reference_predictions, resolve_spec
from serving.models.files import ModelFileError, read_signature
from tests.support.torchscript_files import make_torchscript

TWO = {"features": {"shape": [6], "dtype": "float32"}, "mask": {"shape": [6], "dtype": "int64", "range": [0, 2]}}


def test_the_signature_comes_from_libtorch_and_the_experiment(tmp_path):
    one = make_torchscript(tmp_path / "one.pt")
    with pytest.raises(ModelFileError, match=r"input x: a TorchScript file does not say its dtype and shape; "
                                             r"give them as inputs: \{x: \{dtype: float32"):
        read_signature(one)
    sig = read_signature(one, {"x": {"shape": [6], "dtype": "float32"}})
    assert [t.describe() for t in sig.inputs + sig.outputs] == ["x: float32 [?, 6]", "output: float32 [?, 3]"]
    two = make_torchscript(tmp_path / "two.pt", two=True)
    sig = read_signature(two, TWO)
    assert [t.describe() for t in sig.outputs] == ["output_0: float32 [?, 3]", "output_1: int64 [?]"]
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"junk.pt: not a loadable TorchScript model \(RuntimeError: "):
        read_signature(tmp_path / "junk.pt", {"x": {"shape": [6], "dtype": "float32"}})


def test_the_reference_is_torch_on_the_file(tmp_path):
    two = make_torchscript(tmp_path / "two.pt", two=True)
    import_model_file(two, tmp_path / "models", "two", TWO)
    spec = resolve_spec("two", tmp_path / "models")
    assert spec.named and [t.name for t in spec.outputs] == ["output_0", "output_1"]
    x = {"features": np.random.default_rng(1).random((4, 6), dtype=np.float32),
         "mask": np.ones((4, 6), np.int64)}
    y = reference_predictions("two", tmp_path / "models", x)
    assert y["output_0"].shape == (4, 3) and np.array_equal(y["output_1"], np.argmax(y["output_0"], axis=1))


@pytest.mark.parametrize("given, message", [
    ({"serving": {"backend": "onnxruntime"}}, r"serving.backend: onnxruntime cannot serve a model file .*torchscript\); use one of torchscript"),
    ({"serving": {"backend": "torchscript"}, "engine": "flink"}, r"engine: flink runs in its own environment, without the torchscript file"),
    ({"serving": {"backend": "torchscript", "kind": "external", "server": "triton"}}, r"serving.server: triton cannot serve a model file yet .*torchscript"),
])
def test_where_a_torchscript_file_cannot_run_is_said_in_one_line(tmp_path, given, message):
    one = make_torchscript(tmp_path / "one.pt")
    with pytest.raises(Exception) as err:
        Experiment.model_validate({"name": "t", "model": {"path": str(one), "inputs": {"x": {"shape": [6], "dtype": "float32"}}},
                                   "workload": {"type": "constant", "rate": 1, "duration_s": 1}, **given})
    line = format_validation_error(err.value)
    assert "\n" not in line
    import re
    assert re.search(message, line), line


def test_a_torchscript_file_runs_embedded_and_behind_the_scoring_server(kafka_bootstrap, tmp_path):
    two = make_torchscript(tmp_path / "two.pt", two=True)
    exp = Experiment.model_validate({
        "name": "ts", "model": {"path": str(two), "inputs": TWO}, "engine": "kafka",
        "serving": {"backend": "torchscript"}, "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0,
        "batch_size": 4, "workload": {"type": "constant", "rate": 30, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}, "sweep": {"serving": ["embedded", "scoring"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    assert summary["model"]["reference"].startswith("torch-cpu on ")
    assert summary["model"]["format"] == "torchscript"
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 90 and acc["scored"] == 90 and acc["dead_lettered"] == 0, (point["params"], acc)
        assert acc["checked"] == 90 and acc["wrong"] == 0, (point["params"], acc)
