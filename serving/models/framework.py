"""Model files of other frameworks, read and run by that framework in its own environment.

ONNX files are read and run by ONNX Runtime in every environment. A TorchScript file (``.pt``)
needs libtorch, which lives in the ``torch`` environment only, and a SavedModel folder TensorFlow,
in the ``tensorflow`` one; so everything the core environment needs from such a file -- its
signature, and the reference predictions the collector checks against -- comes from
``python -m serving.models.framework ...`` run there (:data:`ENVIRONMENT` says which):

``signature FILE --inputs JSON``
    prints ``{"inputs": [...], "outputs": [...]}``: the input names are the arguments of
    ``forward``; a TorchScript file does not say their dtypes or shapes, so ``--inputs`` (the
    experiment's ``inputs: {<name>: {shape, dtype}}``) must; the outputs are learned by scoring
    a zero batch of two items (a tensor: ``output``; a tuple: ``output_0``, ``output_1``, ...; a
    dict: its keys).
    A SavedModel says everything in its ``serving_default`` signature: the inputs and outputs are
    its keys (sorted), with their dtypes and shapes.
``reference FILE --spec MANIFEST_JSON --inputs IN.npz --out OUT.npz``
    scores every batch of ``IN.npz`` (arrays ``<k>/<input name>``) with the file on the CPU and
    writes ``<k>/<output name>``: the reference of a run (serving.models.files.framework_reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ENVIRONMENT = {"torchscript": "torch", "savedmodel": "tensorflow"}
SIGNATURE = "serving_default"


def _is_savedmodel(path: str) -> bool:
    return Path(path).is_dir()


def _tf_signature(path: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[SIGNATURE]
    _, kwargs = fn.structured_input_signature

    def tensor(name, spec):
        shape = [None if d is None else int(d) for d in spec.shape.as_list()] if spec.shape.rank is not None else None
        return {"name": name, "dtype": spec.dtype.as_numpy_dtype().dtype.name if spec.dtype != tf.bool else "bool",
                "shape": shape}

    return {"inputs": [tensor(k, kwargs[k]) for k in sorted(kwargs)],
            "outputs": [tensor(k, fn.structured_outputs[k]) for k in sorted(fn.structured_outputs)]}


def _tf_reference(path: str, in_names: list[str], batches: list[dict]) -> list[dict]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[SIGNATURE]
    return [{k: v.numpy() for k, v in fn(**{n: tf.constant(b[n]) for n in in_names}).items()} for b in batches]


def _load(path: str):
    import torch

    torch.set_num_threads(1)
    module = torch.jit.load(path, map_location="cpu")
    module.eval()
    return torch, module


def _names(outputs) -> list[str]:
    if isinstance(outputs, dict):
        return list(outputs)
    if isinstance(outputs, (tuple, list)):
        return [f"output_{i}" for i in range(len(outputs))]
    return ["output"]


def _arrays(outputs) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if not isinstance(outputs, (tuple, list)):
        outputs = [outputs]
    return [o.detach().cpu().numpy() for o in outputs]


def signature(path: str, given: dict) -> dict:
    if _is_savedmodel(path):
        return _tf_signature(path)
    torch, module = _load(path)
    args = [a.name for a in module.forward.schema.arguments[1:]]      # [0] is self
    inputs = [{"name": n, "dtype": given.get(n, {}).get("dtype"),
               "shape": [None, *given[n]["shape"]] if "shape" in given.get(n, {}) else None} for n in args]
    if any(i["dtype"] is None or i["shape"] is None for i in inputs):
        return {"inputs": inputs, "outputs": []}
    feed = [torch.zeros((2, *i["shape"][1:]), dtype=getattr(torch, i["dtype"])) for i in inputs]
    with torch.inference_mode():
        out = module(*feed)
    outputs = [{"name": n, "dtype": str(a.dtype), "shape": [None, *a.shape[1:]]}
               for n, a in zip(_names(out), _arrays(out))]
    return {"inputs": inputs, "outputs": outputs}


def reference(path: str, spec: dict, inputs: Path, out: Path) -> None:
    in_names = [t["name"] for t in spec["inputs"]]
    out_names = [t["name"] for t in spec["outputs"]]
    results = {}
    with np.load(inputs) as z:
        keys = sorted({k.split("/")[0] for k in z.files}, key=int)
        if _is_savedmodel(path):
            answers = _tf_reference(path, in_names, [{n: z[f"{k}/{n}"] for n in in_names} for k in keys])
            np.savez(out, **{f"{k}/{n}": a[n] for k, a in zip(keys, answers) for n in out_names})
            return
        torch, module = _load(path)
        with torch.inference_mode():
            for k in keys:
                ys = _arrays(module(*[torch.from_numpy(np.array(z[f"{k}/{n}"])) for n in in_names]))
                results.update({f"{k}/{n}": y for n, y in zip(out_names, ys)})
    np.savez(out, **results)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="TorchScript files and SavedModels, read in their framework's environment")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("signature")
    s.add_argument("file")
    s.add_argument("--inputs", default="{}")
    r = sub.add_parser("reference")
    r.add_argument("file")
    r.add_argument("--spec", required=True)
    r.add_argument("--inputs", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        if a.cmd == "signature":
            print(json.dumps(signature(a.file, json.loads(a.inputs))))
        else:
            reference(a.file, json.loads(a.spec), a.inputs, a.out)
    except Exception as exc:  # noqa: BLE001 - one line for the caller, which names the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
