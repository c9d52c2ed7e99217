"""The report's Model section: a file model's path, sha256, signature and reference, a zoo
model's build facts, the contract it travels in; escaped; nothing for a summary without facts."""

from __future__ import annotations

from services.report.model import model_section


def test_a_file_model_is_named_with_its_sha_signature_and_reference():
    facts = {"name": "m", "kind": "file", "file": "/x/<m>.onnx", "format": "onnx", "sha256": "ab" * 32,
             "signature": {"inputs": ["features: float32 [?, 6]", "mask: int64 [?, 6]"], "outputs": ["scores: float32 [?, 3]"]},
             "spec": {"inputs": [{}, {}], "outputs": [{}]}, "reference": "onnxruntime-cpu on /x/m.onnx (sha256 ab)",
             "zoo": {"facts": {"framework": "scikit-learn 1.6.1", "training": {"rows": 10, "holdout_auc": 0.8, "features": ["a"]}},
                     "framework_check": {"rows": 5, "max_abs_error": {"label": 0.0, "probabilities": 2.4e-7}, "atol": 1e-4}}}
    html = model_section(facts)
    for text in ("ab" * 32, "features: float32 [?, 6]", "mask: int64 [?, 6]", "scores: float32 [?, 3]",
                 "onnxruntime-cpu on /x/m.onnx", "named (DataBatch.inputs", "scikit-learn 1.6.1",
                 "rows 10, holdout_auc 0.8", "on 5 rows: max abs error label 0, probabilities 2.4e-07"):
        assert text in html, text
    assert "/x/&lt;m&gt;.onnx" in html and "<m>" not in html


def test_a_built_in_model_and_a_summary_without_facts():
    html = model_section({"name": "ffnn", "kind": "built-in", "spec": {"inputs": [{}], "outputs": [{}]},
                          "reference": "numpy forward pass of ffnn"})
    assert "single (DataBatch.input" in html and "numpy forward pass of ffnn" in html and "sha256" not in html
    assert model_section(None) == "" and model_section({}) == ""
