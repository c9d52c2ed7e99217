"""A model file of one's own (serving.models.files): the signature read from the file, every
refusal one line naming the file and the tensor, the import into a models dir, the experiment
field `model: {path: ...}` and `crayfish models describe`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from onnx import TensorProto

from serving.models import MODELS, ModelFileError, import_model_file, model_facts, read_signature, resolve_spec
from serving.models.build import model_paths
from serving.models.files import default_name, spec_from_signature
from services.runner.experiment import ExperimentError, load_experiment
from tests.support.model_files import two_layer_onnx


@pytest.fixture
def model(tmp_path):
    return two_layer_onnx(tmp_path / "My Fraud.v2.onnx", n_in=6, n_out=3)


def test_signature_and_spec_come_from_the_file(model):
    sig = read_signature(model)
    assert [t.describe() for t in sig.inputs] == ["features: float32 [?, 6]"]
    assert [t.describe() for t in sig.outputs] == ["scores: float32 [?, 3]"]
    spec = spec_from_signature(sig, "m")
    assert (spec.input_name, spec.output_name, spec.input_shape, spec.output_shape, spec.input_dtype) == \
        ("features", "scores", (6,), (3,), "float32")
    assert default_name(model) == "My-Fraud-v2"


def test_a_free_item_axis_needs_its_size_and_the_error_names_the_input(tmp_path):
    sig = read_signature(two_layer_onnx(tmp_path / "free.onnx", free_item_axis=True))
    with pytest.raises(ModelFileError, match=r"input features: item shape \['\?'\] has free axes.*inputs: \{features: \{shape"):
        spec_from_signature(sig, "m")
    assert spec_from_signature(sig, "m", {"features": {"shape": [6]}}).input_shape == (6,)
    with pytest.raises(ModelFileError, match=r"inputs.features.shape: \[6, 2\] does not fit"):
        spec_from_signature(sig, "m", {"features": {"shape": [6, 2]}})
    with pytest.raises(ModelFileError, match=r"inputs.tokens: the file has no such input \(inputs: features\)"):
        spec_from_signature(sig, "m", {"tokens": {"shape": [6]}})


@pytest.mark.parametrize("make, message", [
    (lambda d: two_layer_onnx(d / "s.onnx", extra_input=True, mask_type=TensorProto.STRING),
     r"input mask: dtype tensor\(string\); supported: float32"),
    (lambda d: two_layer_onnx(d / "fixed.onnx", batch_axis=1), r"input features: first axis has fixed size 1; .*dynamic batch axis"),
    (lambda d: (d / "saved").mkdir() or d / "saved", r"a folder, but not a SavedModel \(no saved_model.pb in it\)"),
    (lambda d: (d / "m.h5").write_bytes(b"x") and d / "m.h5", r"not a model format served here \(.h5\); give an ONNX"),
    (lambda d: (d / "junk.onnx").write_bytes(b"not a graph") and d / "junk.onnx", r"not a loadable ONNX model"),
    (lambda d: d / "absent.onnx", r"no such model file"),
])
def test_what_cannot_be_served_is_refused_in_one_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ModelFileError, match=message) as err:
        spec_from_signature(read_signature(path), "m")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_import_writes_the_file_and_its_description_once(model, tmp_path):
    models = tmp_path / "models"
    manifest_path = import_model_file(model, models, "fraud")
    art = model_paths("fraud", models)
    assert art.exists() and art.is_file_model() and art.onnx.read_bytes() == model.read_bytes()
    manifest = json.loads(manifest_path.read_text())
    assert manifest["input_name"] == "features" and manifest["input_shape"] == ["batch", 6]
    assert manifest["source"]["path"] == str(model) and manifest["reference"] == "onnxruntime-cpu"
    assert resolve_spec("fraud", models).output_shape == (3,) and "fraud" not in MODELS
    stamp = manifest_path.stat().st_mtime_ns
    import_model_file(model, models, "fraud")
    assert manifest_path.stat().st_mtime_ns == stamp           # unchanged file: nothing rewritten
    two_layer_onnx(model, seed=99)                              # the user retrained it
    import_model_file(model, models, "fraud")
    assert json.loads(manifest_path.read_text())["source"]["sha256"] != manifest["source"]["sha256"]
    facts = model_facts("fraud", models)
    assert facts["kind"] == "file" and facts["sha256"] == json.loads(manifest_path.read_text())["source"]["sha256"]
    with pytest.raises(KeyError, match="unknown model 'other'"):
        resolve_spec("other", models)


def test_a_file_may_not_take_the_place_of_a_built_in_model(model, tmp_path):
    models = tmp_path / "models"
    (models / "ffnn").mkdir(parents=True)
    (models / "ffnn" / "manifest.json").write_text(json.dumps({"name": "ffnn", "seed": 42}))
    with pytest.raises(ModelFileError, match="is a built-in model"):
        import_model_file(model, models, "ffnn")


def _experiment(tmp_path, **fields):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "e", "workload": {"type": "constant", "rate": 10, "duration_s": 2},
                                    **fields}))
    return path


@pytest.mark.parametrize("fields, message", [
    ({"model": {"path": "nope.onnx"}}, r"model.path: .*nope.onnx: no such model file"),
    ({"model": {"path": "My Fraud.v2.onnx", "name": "ffnn"}}, r"model.name: 'ffnn' is a built-in model"),
    ({"model": {"path": "My Fraud.v2.onnx"}, "serving": {"backend": "torchscript"}},
     r"serving.backend: torchscript cannot serve a model file .*onnx\); use one of onnxruntime"),
    ({"model": {"path": "My Fraud.v2.onnx"}, "serving": {"backend": "onnxruntime", "kind": "external", "server": "tf-serving"},
      "engine": "kafka", "codec": "crayfish-json", "named_tensors": True},
     r"named_tensors: codec crayfish-json carries one unnamed tensor; use codec protobuf"),
    ({"model": "nope"}, r"model: unknown model 'nope'; known: ffnn, resnet50"),
])
def test_experiment_errors_name_the_field_in_one_line(model, tmp_path, fields, message):
    with pytest.raises(ExperimentError, match=message) as err:
        load_experiment(_experiment(tmp_path, **fields))
    assert "\n" not in str(err.value)


def test_experiment_takes_the_file_from_its_own_folder(model, tmp_path):
    exp = load_experiment(_experiment(tmp_path, model={"path": model.name, "inputs": {"features": {"shape": [6]}}}))
    assert exp.model == "My-Fraud-v2" and exp.model_file.path == model
    again = exp.with_overrides({"batch_size": 8})                  # a sweep point keeps the file
    assert again.model_file == exp.model_file and again.model == exp.model


def test_models_describe_prints_the_signature_or_one_line_why_not(model, tmp_path):
    cli = [sys.executable, "-m", "services.runner.cli", "models", "describe"]
    ok = subprocess.run([*cli, str(model)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "input  features: float32 [?, 6]" in ok.stdout and "served as 'My-Fraud-v2'" in ok.stdout
    assert "a single tensor (DataBatch.input)" in ok.stdout
    two = subprocess.run([*cli, str(two_layer_onnx(tmp_path / "two.onnx", extra_input=True, extra_output=True))],
                         capture_output=True, text=True, timeout=60)
    assert two.returncode == 0, two.stderr
    assert "features float32 [6], mask int64 [6] -> scores float32 [3], label int64 []" in two.stdout
    assert "named tensors (DataBatch.inputs)" in two.stdout
    bad = subprocess.run([*cli, str(two_layer_onnx(tmp_path / "free.onnx", free_item_axis=True))],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "has free axes besides the batch" in bad.stderr
