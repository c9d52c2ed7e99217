"""TorchServe serves a model file of one's own, end to end (generator -> Kafka -> worker -> TorchServe
-> Kafka -> collector): a TorchScript file (run by the torchscript backend in TorchServe's worker)
and an ONNX file (run by the onnxruntime backend there), each with two inputs of different dtypes
(features float32 + mask int64) and two outputs (float32 scores + an int64 label), so every batch
travels as named tensors both ways; every batch accounted for and every prediction checked against
the file's own reference (torch on the CPU / ONNX Runtime on the CPU)."""

from __future__ import annotations

from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from tests.support.model_files import two_layer_onnx
from tests.support.torchscript_files import make_torchscript

TWO = {"features": {"shape": [6], "dtype": "float32"}, "mask": {"shape": [6], "dtype": "int64", "range": [0, 2]}}


def _run(model: dict, backend: str, kafka_bootstrap: str, tmp_path) -> dict:
    exp = Experiment.model_validate({
        "name": "ts-file", "model": model, "engine": "kafka", "serving": {"backend": backend},
        "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 4,
        "workload": {"type": "constant", "rate": 30, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}, "sweep": {"serving": ["torchserve"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    [point] = summary["points"]
    assert point["params"]["serving"] == "torchserve"
    assert point["answered_by"][0].startswith("torchserve "), point["answered_by"]
    acc = point["accounting"]
    assert acc["sent"] == 90 and acc["scored"] == 90 and acc["dead_lettered"] == 0, acc
    assert acc["missing"] == 0 and acc["checked"] == acc["sent"] and acc["wrong"] == 0, acc
    assert point["valid"], point["reasons"]
    return summary


def test_torchserve_serves_a_torchscript_file_of_two_inputs_and_two_outputs(kafka_bootstrap, tmp_path):
    two = make_torchscript(tmp_path / "two.pt", two=True)
    summary = _run({"path": str(two), "inputs": TWO}, "torchscript", kafka_bootstrap, tmp_path)
    assert summary["model"]["format"] == "torchscript"
    assert summary["model"]["reference"].startswith("torch-cpu on ")


def test_torchserve_serves_an_onnx_file_of_two_inputs_and_two_outputs(kafka_bootstrap, tmp_path):
    model = two_layer_onnx(tmp_path / "masked.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    summary = _run({"path": str(model), "inputs": {"mask": {"range": [0, 2]}}}, "onnxruntime", kafka_bootstrap, tmp_path)
    assert summary["model"]["format"] == "onnx"
    assert summary["model"]["signature"] == {"inputs": ["features: float32 [?, 6]", "mask: int64 [?, 6]"],
                                             "outputs": ["scores: float32 [?, 3]", "label: int64 [?]"]}
