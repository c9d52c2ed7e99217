"""Your model: a model file built here (not one of the zoo, weights of its own) runs end to end
through the baseline worker (embedded ONNX Runtime) and through our Scoring server, and every
checked prediction is right against its own file (ONNX Runtime on the CPU)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

import sps_workers

from services.report.html import write_report
from services.runner.experiment import Experiment, load_experiment
from services.runner.experiments import run_experiment
from serving.models import import_model_file, reference_predictions, resolve_spec
from serving.models.files import read_signature, sha256_file
from tests.support.model_files import forward, two_layer_onnx


def test_a_model_file_of_ones_own_runs_embedded_and_behind_the_scoring_server(kafka_bootstrap, tmp_path):
    model = two_layer_onnx(tmp_path / "fraud.onnx", n_in=6, n_out=3)
    exp_file = tmp_path / "mine.yaml"
    exp_file.write_text(yaml.safe_dump({
        "name": "mine", "model": {"path": "fraud.onnx"}, "engine": "kafka",
        "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 4,
        "workload": {"type": "constant", "rate": 40, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20},
        "sweep": {"serving": ["embedded", "scoring"]}}))
    exp = load_experiment(exp_file)   # the relative path is taken from the experiment's folder
    assert exp.model == "fraud" and exp.model_file.path == model

    models_dir = tmp_path / "models"
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)

    facts = summary["model"]
    assert facts["kind"] == "file" and facts["file"] == str(model)
    assert facts["sha256"] == sha256_file(model)
    assert facts["signature"] == {"inputs": ["features: float32 [?, 6]"], "outputs": ["scores: float32 [?, 3]"]}
    assert facts["reference"].startswith("onnxruntime-cpu on ") and sha256_file(model) in facts["reference"]
    assert [p["params"]["serving"] for p in summary["points"]] == ["embedded", "scoring"]
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 120 and acc["scored"] == 120 and acc["dead_lettered"] == 0, acc
        assert acc["missing"] == 0 and acc["checked"] == 120 and acc["wrong"] == 0, acc
        assert point["valid"], point["reasons"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["source"]["sha256"] == sha256_file(model)
    assert manifest["model"]["reference"] == "onnxruntime-cpu"
    backends = set(pq.read_table(tmp_path / "run" / "batches.parquet").column("backend").to_pylist())
    assert backends == {"onnxruntime", "scoring"}, backends
    html = write_report(tmp_path / "run").read_text()           # the report names it too
    assert sha256_file(model) in html and "features: float32 [?, 6]" in html and "onnxruntime-cpu on " in html


def test_a_model_with_two_inputs_of_different_dtypes_runs_end_to_end(kafka_bootstrap, tmp_path):
    """features float32 + mask int64 in, scores float32 + label int64 out: the named-tensor
    contract through the baseline worker (embedded) and our Scoring server, every batch checked
    against ONNX Runtime on the file, output by output."""
    model = two_layer_onnx(tmp_path / "masked.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    exp = Experiment.model_validate({
        "name": "two-in", "model": {"path": str(model), "inputs": {"mask": {"range": [0, 2]}}},
        "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 4,
        "workload": {"type": "constant", "rate": 40, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20},
        "sweep": {"serving": ["embedded", "scoring"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    assert summary["model"]["signature"] == {"inputs": ["features: float32 [?, 6]", "mask: int64 [?, 6]"],
                                             "outputs": ["scores: float32 [?, 3]", "label: int64 [?]"]}
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 120 and acc["scored"] == 120 and acc["dead_lettered"] == 0, (point["params"], acc)
        assert acc["checked"] == 120 and acc["wrong"] == 0, (point["params"], acc)
        assert point["valid"], point["reasons"]


def test_the_reference_of_a_file_is_the_file_itself(tmp_path):
    """Checked against an independent numpy pass over the file's own weights."""
    import numpy as np

    model = two_layer_onnx(tmp_path / "m.onnx", n_in=6, n_out=3, seed=11)
    import_model_file(model, tmp_path / "models", "m")
    x = np.random.default_rng(0).random((5, 6), dtype=np.float32)
    got = reference_predictions("m", tmp_path / "models", x)
    assert np.allclose(got, forward(model, x), atol=1e-5)
    assert resolve_spec("m", tmp_path / "models").input_shape == (6,)
    assert read_signature(model).inputs[0].name == "features"


ENGINES_BESIDES_THE_BASELINE = [e for e in sps_workers.ENGINES if e != "kafka"]


@pytest.mark.parametrize("engine", ENGINES_BESIDES_THE_BASELINE)
def test_every_engine_serves_the_model_file(engine, kafka_bootstrap, tmp_path):
    """A file with two inputs of different dtypes and two outputs (the named-tensor contract),
    embedded in every other engine (the Java one reads the imported manifest)."""
    model = two_layer_onnx(tmp_path / "fraud.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    exp = Experiment.model_validate({
        "name": "mine", "model": {"path": str(model), "inputs": {"mask": {"range": [0, 2]}}}, "engine": engine,
        "engine_options": dict(sps_workers.ENGINES[engine].options.CONFORMANCE_OPTIONS),
        "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 2,
        "workload": {"type": "constant", "rate": 20, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}})
    point = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")["points"][0]
    acc = point["accounting"]
    assert acc["sent"] == 60 and acc["scored"] == 60 and acc["dead_lettered"] == 0, acc
    assert acc["checked"] == 60 and acc["wrong"] == 0, acc


def test_triton_and_ray_serve_serve_the_model_file(kafka_bootstrap, tmp_path):
    """Servers that run our embedded scorers serve the file too; their clients learn its tensor
    names from the server (Triton's model metadata) or need none (Ray Serve)."""
    model = two_layer_onnx(tmp_path / "fraud.onnx", n_in=6, n_out=3)
    exp = Experiment.model_validate({
        "name": "mine", "model": {"path": str(model)}, "engine": "kafka",
        "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 2,
        "workload": {"type": "constant", "rate": 20, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20},
        "sweep": {"serving": ["triton", "ray-serve", "ray-serve-grpc"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 60 and acc["scored"] == 60 and acc["dead_lettered"] == 0, (point["params"], acc)
        assert acc["checked"] == 60 and acc["wrong"] == 0, (point["params"], acc)


def test_triton_and_ray_serve_serve_a_model_of_two_inputs_and_two_outputs(kafka_bootstrap, tmp_path):
    """Named tensors behind the servers that run our embedded scorers: features float32 + mask
    int64 in, scores float32 + label int64 out, every input by name in its dtype to Triton (one
    InferInput each), Ray Serve over HTTP and over its gRPC proxy; every batch checked against ONNX
    Runtime on the file, output by output."""
    model = two_layer_onnx(tmp_path / "masked.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    exp = Experiment.model_validate({
        "name": "two-in-servers", "model": {"path": str(model), "inputs": {"mask": {"range": [0, 2]}}},
        "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 2,
        "workload": {"type": "constant", "rate": 20, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20},
        "sweep": {"serving": ["triton", "ray-serve", "ray-serve-grpc"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    assert [p["params"]["serving"] for p in summary["points"]] == ["triton", "ray-serve", "ray-serve-grpc"]
    answered = [p["answered_by"] for p in summary["points"]]
    assert answered[0][0].startswith("triton ") and answered[1] == answered[2] and \
        answered[1][0].startswith("ray-serve "), answered
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 60 and acc["scored"] == 60 and acc["dead_lettered"] == 0, (point["params"], acc)
        assert acc["missing"] == 0 and acc["checked"] == acc["sent"] and acc["wrong"] == 0, (point["params"], acc)
        assert point["valid"], point["reasons"]


def test_the_tf_serving_protocol_serves_a_model_file_of_two_inputs(kafka_bootstrap, tmp_path):
    """An ONNX file behind the TF Serving protocol (our servicer running it with ONNX Runtime):
    every input by its own name in PredictRequest.inputs, every output back, all checked."""
    model = two_layer_onnx(tmp_path / "masked.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    exp = Experiment.model_validate({
        "name": "two-in-tfs", "model": {"path": str(model), "inputs": {"mask": {"range": [0, 2]}}},
        "engine": "kafka", "serving": {"kind": "external", "server": "tf-serving"},
        "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0, "batch_size": 2,
        "workload": {"type": "constant", "rate": 20, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}})
    [point] = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")["points"]
    acc = point["accounting"]
    assert acc["sent"] == 60 and acc["scored"] == 60 and acc["dead_lettered"] == 0, acc
    assert acc["checked"] == 60 and acc["wrong"] == 0, acc
    assert point["answered_by"][0].startswith("crayfish-scoring (tf-serving protocol)"), point["answered_by"]
