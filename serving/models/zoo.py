"""The zoo: models users actually stream, built here by their own frameworks and served as model files.

Beside the paper's FFNN and ResNet50 (built-in, numpy references), the zoo holds models whose
natural home is another framework:

=================  ===========  =====================================================================
name               environment  what
=================  ===========  =====================================================================
``fraud-gbt``      zoo          gradient-boosted trees (scikit-learn) on seeded synthetic
                                transactions, skl2onnx export (:mod:`serving.models.zoo_trees`)
``text-encoder``   torch        a small BERT-like encoder, seeded weights, ``torch.onnx.export``
                                (:mod:`serving.models.zoo_transformer`); ``seq_len`` is a setting
=================  ===========  =====================================================================

An experiment names one as ``model: fraud-gbt`` or ``model: {zoo: text-encoder, seq_len: 64}``.
:func:`build_zoo_model` runs the builder in its environment (cached by seed and builder source),
checks ONNX Runtime on the exported file against the framework's own answers on held-out inputs
(the builder's ``<name>.check.npz``; a mismatch fails the build), then imports the file exactly as
a user's model file (:func:`serving.models.files.import_model_file`): from there on it is served
and checked like one, against ONNX Runtime on the CPU on the file. The manifest's ``zoo`` entry
keeps the builder, its facts (framework versions, training data, holdout AUC) and the framework
check.

Adding a zoo model: a builder module with ``NAME`` and ``build(out_dir, seed) -> onnx path`` that
also writes ``<NAME>.check.npz`` (``in.<input>`` / ``out.<output>`` arrays) and
``<NAME>.facts.json``; a :class:`ZooModel` line in :data:`ZOO` with its static :class:`ModelSpec`
(what ``crayfish validate`` checks before anything is built).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from crayfish.host.envs import python_for
from crayfish.host.paths import REPO_ROOT
from serving.models.files import import_model_file, reference_outputs
from serving.models.spec import ModelSpec, TensorSpec

CHECK_ATOL = 1e-4


@dataclass(frozen=True)
class ZooModel:
    name: str
    builder: str                                  # module run as `python -m <builder> --out D --seed S`
    environment: str                              # crayfish.host.envs name the builder runs in
    description: str
    make_spec: Callable[[int | None], ModelSpec]  # seq_len (None: the default) -> the served spec
    default_seq_len: int | None = None
    max_seq_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self, seq_len: int | None = None) -> ModelSpec:
        return self.make_spec(seq_len or self.default_seq_len)

    def overrides(self, seq_len: int | None = None) -> dict[str, dict]:
        """What the import is told beyond the file: item shapes and synthetic value ranges."""
        spec = self.spec(seq_len)
        out: dict[str, dict] = {}
        for t in spec.inputs:
            o: dict[str, Any] = {"shape": list(t.shape)}
            if t.low is not None:
                o["range"] = [t.low, t.high]
            if t.fill != "random":
                o["fill"] = t.fill
            out[t.name] = o
        return out


def _fraud_spec(_seq_len: int | None) -> ModelSpec:
    return ModelSpec.of_tensors(
        "fraud-gbt", [TensorSpec("features", "float32", (12,))],
        [TensorSpec("label", "int64", ()), TensorSpec("probabilities", "float32", (2,))],
        description="gradient-boosted trees (scikit-learn, skl2onnx) on seeded synthetic transactions")


def _text_spec(seq_len: int | None) -> ModelSpec:
    s = int(seq_len or 128)
    return ModelSpec.of_tensors(
        "text-encoder", [TensorSpec("input_ids", "int64", (s,), 1, 1000), TensorSpec("attention_mask", "int64", (s,),
                                                                                     fill="ones")],
        [TensorSpec("logits", "float32", (2,))],
        description=f"BERT-like encoder (2 layers, width 64, 4 heads), PyTorch export, sequence length {s}")


ZOO: dict[str, ZooModel] = {z.name: z for z in (
    ZooModel("fraud-gbt", "serving.models.zoo_trees", "zoo", "tabular fraud scoring: gradient-boosted trees",
             _fraud_spec),
    ZooModel("text-encoder", "serving.models.zoo_transformer", "torch",
             "small transformer text classifier (input_ids + attention_mask)", _text_spec,
             default_seq_len=128, max_seq_len=512),
)}


def get_zoo(name: str) -> ZooModel:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; the zoo: {', '.join(ZOO)}") from None


def _builder_stamp(z: ZooModel, seed: int) -> dict:
    source = (REPO_ROOT / (z.builder.replace(".", "/") + ".py")).read_bytes()
    return {"seed": seed, "builder": z.builder, "builder_sha256": hashlib.sha256(source).hexdigest()}


def framework_check(onnx_path: Path, spec: ModelSpec, check_npz: Path) -> dict:
    """ONNX Runtime on the file against the framework's own answers; raises on a mismatch."""
    with np.load(check_npz) as c:
        feeds = {t.name: c[f"in.{t.name}"] for t in spec.inputs}
        want = {t.name: c[f"out.{t.name}"] for t in spec.outputs}
    got = reference_outputs(onnx_path, spec, feeds)
    got = got if isinstance(got, dict) else {spec.output_name: got}
    errors = {k: float(np.max(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64)))) for k in want}
    if any(e > CHECK_ATOL for e in errors.values()):
        raise RuntimeError(f"{onnx_path}: ONNX Runtime disagrees with the framework: max abs error {errors}")
    rows = len(next(iter(feeds.values())))
    return {"rows": rows, "max_abs_error": errors, "atol": CHECK_ATOL}


def build_zoo_model(name: str, models_dir: Path | str, seed: int = 42, seq_len: int | None = None,
                    log: Callable[[str], Any] = print) -> Path:
    """Build (or reuse) a zoo model and import it under its name; returns the manifest's path."""
    z = get_zoo(name)
    out = Path(models_dir) / "_zoo" / name
    stamp_path, onnx_path = out / "build.json", out / f"{name}.onnx"
    stamp = _builder_stamp(z, seed)
    try:
        current = json.loads(stamp_path.read_text()) == stamp and onnx_path.is_file()
    except (OSError, ValueError):
        current = False
    if not current:
        log(f"model {name}: building with {z.builder} (in the {z.environment} environment)")
        subprocess.run([python_for(z.environment, log=log), "-m", z.builder, "--out", str(out), "--seed", str(seed)],
                       check=True)
        stamp_path.write_text(json.dumps(stamp) + "\n")
    spec = z.spec(seq_len)
    manifest_path = import_model_file(onnx_path, models_dir, name, z.overrides(seq_len))
    served = ModelSpec.from_manifest(json.loads(manifest_path.read_text()))
    if served != spec:
        raise RuntimeError(f"zoo model {name}: the built file serves {served}, the zoo declares {spec}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("zoo", {}).get("build") != stamp or manifest["zoo"].get("seq_len") != seq_len:
        facts = json.loads((out / f"{name}.facts.json").read_text())
        manifest["zoo"] = {"build": stamp, "facts": facts, "seq_len": seq_len,
                           "framework_check": framework_check(onnx_path, spec, out / f"{name}.check.npz")}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path


def builder_main(build: Callable[[Path, int], Path], doc: str, argv: list[str] | None = None) -> None:
    """The command line of a builder module: ``--out DIR --seed S``; prints the ONNX file's path."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args(argv)
    print(build(a.out, a.seed))
