"""``python -m serving.models build|list`` (wrapped by ``crayfish models build``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from serving.models.build import build_model, default_models_dir, model_paths
from serving.models.spec import MODELS


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.models", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or verify cached) model artifacts")
    b.add_argument("--model", default="all", choices=[*MODELS, "all"])
    b.add_argument("--dir", type=Path, default=None, help=f"models dir (default {default_models_dir()})")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--force", action="store_true", help="rebuild even if the cache matches")
    b.add_argument("--json", action="store_true", help="print the manifests as JSON")
    ls = sub.add_parser("list", help="show the models and whether they are built")
    ls.add_argument("--dir", type=Path, default=None)
    args = p.parse_args(argv)

    if args.cmd == "build":
        names = list(MODELS) if args.model == "all" else [args.model]
        manifests = {}
        for name in names:
            t0 = time.perf_counter()
            art = build_model(name, args.dir, seed=args.seed, force=args.force)
            m = art.manifest
            manifests[name] = m
            if not args.json:
                print(f"{name}: {m['param_count']:,} params, seed {m['seed']}, "
                      f"onnx {_human(m['files']['onnx']['bytes'])}, npz {_human(m['files']['weights']['bytes'])}"
                      f" -> {art.model_dir} ({time.perf_counter() - t0:.2f}s)")
        if args.json:
            print(json.dumps(manifests, indent=2))
        return 0

    for name, spec in MODELS.items():
        art = model_paths(name, args.dir)
        state = f"built (seed {art.manifest.get('seed')})" if art.exists() else "not built"
        print(f"{name:10s} in {list(spec.input_shape)} out {list(spec.output_shape)}  {state}  {art.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
