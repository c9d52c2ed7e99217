"""The report's "Model" section: which model a run measured and what its predictions were checked
against (summary.json ``model``: serving.models.build.model_facts)."""

from __future__ import annotations

from html import escape
from typing import Any


def _row(key: str, value: Any) -> str:
    return f"<tr><th>{escape(key)}</th><td>{escape(str(value))}</td></tr>"


def model_section(facts: dict | None) -> str:
    """A table of the model's facts; empty when the summary has none (runs from before they were kept)."""
    if not facts:
        return ""
    rows = [_row("name", facts.get("name", "?")), _row("kind", facts.get("kind", "?"))]
    if facts.get("kind") == "file":
        rows += [_row("file", facts.get("file", "?")), _row("format", facts.get("format", "?")),
                 _row("sha256", facts.get("sha256", "?"))]
        sig = facts.get("signature") or {}
        rows += [_row("input", t) for t in sig.get("inputs", [])]
        rows += [_row("output", t) for t in sig.get("outputs", [])]
    spec = facts.get("spec") or {}
    named = len(spec.get("inputs", [])) > 1 or len(spec.get("outputs", [])) > 1
    rows.append(_row("tensors on the wire", "named (DataBatch.inputs / ScoredBatch.outputs)" if named
                     else "single (DataBatch.input / ScoredBatch.output)"))
    rows.append(_row("checked against", facts.get("reference", "?")))
    zoo = facts.get("zoo")
    if zoo:
        zf = zoo.get("facts") or {}
        for key in ("framework", "converter", "weights"):
            if key in zf:
                rows.append(_row(f"zoo: {key}", zf[key]))
        training = zf.get("training")
        if training:
            rows.append(_row("zoo: training", ", ".join(f"{k} {v}" for k, v in training.items() if k != "features")))
        check = zoo.get("framework_check")
        if check:
            errors = ", ".join(f"{k} {v:.2g}" for k, v in check.get("max_abs_error", {}).items())
            rows.append(_row("zoo: export check", f"ONNX Runtime vs the framework on {check.get('rows')} rows: "
                                                  f"max abs error {errors} (atol {check.get('atol')})"))
    return (f'<section id="model"><h2>Model</h2><table class="facts">{"".join(rows)}</table></section>')
