"""The collector's prediction check: |output - reference| <= atol + rtol * |reference|, against the
reference the model names (here a model file's: ONNX Runtime on the CPU on that file)."""

from __future__ import annotations

import numpy as np

from services.collector.checker import PredictionChecker
from services.generator.generator import BatchFactory
from services.generator.settings import GeneratorSettings
from serving.models import import_model_file, reference_predictions
from tests.support.model_files import two_layer_onnx


def _checker(tmp_path, **tolerance):
    import_model_file(two_layer_onnx(tmp_path / "m.onnx"), tmp_path / "models", "m")
    gs = GeneratorSettings(bootstrap="unused:1", topic="t", run_id="r", model="m", item_shape=[6],
                           batch_size=4, workload={"type": "constant", "rate": 1, "duration_s": 1})
    checker = PredictionChecker(gs, tmp_path / "models", sample_rate=1.0, **tolerance)
    x = BatchFactory(gs).pool_arrays[2]
    return checker, reference_predictions("m", tmp_path / "models", x)


def test_absolute_tolerance_by_default(tmp_path):
    checker, ref = _checker(tmp_path)
    assert checker.check(2, ref) is True
    assert checker.check(2, ref + 0.9e-4) is True
    assert checker.check(2, ref + 1.1e-4) is False
    report = checker.report()
    assert (report["checked"], report["wrong"], report["atol"], report["rtol"]) == (3, 1, 1e-4, 0.0)
    assert report["reference"].startswith("onnxruntime-cpu on ") and "m.onnx" in report["reference"]


def test_relative_tolerance_scales_with_the_reference(tmp_path):
    checker, ref = _checker(tmp_path, atol=0.0, rtol=1e-2)
    assert checker.check(2, ref * 1.009) is True
    assert checker.check(2, ref * 1.011 + np.sign(ref) * 1e-6) is False
