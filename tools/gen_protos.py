#!/usr/bin/env python3
"""Generate the Python stubs for ``protos/crayfish/v1`` (messages, ``.pyi`` and gRPC services).

Usage (from anywhere; paths default to this repository)::

    python tools/gen_protos.py                  # regenerate into the repo root -> crayfish/v1/
    python tools/gen_protos.py --out /tmp/x     # generate into another directory
    python tools/gen_protos.py --check          # exit 1 (listing the files) if crayfish/v1 drifted

It runs ``python -m grpc_tools.protoc`` (pinned via ``grpcio-tools`` in the dev extra) with the
proto root as the only import path and the ``.proto`` files in sorted order, so the output depends
only on the ``.proto`` files and the grpcio-tools version: regenerating twice gives identical bytes.

``--check`` generates into a temporary directory and compares byte-for-byte with the committed stubs
(every generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py``; hand-written files such as
``__init__.py`` are ignored). Stale committed stubs with no ``.proto`` behind them count as drift too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from crayfish.host.paths import REPO_ROOT

REPO = REPO_ROOT
PROTO_ROOT = REPO / "protos"
PACKAGE_DIR = Path("crayfish") / "v1"  # relative to both the proto root and the output root
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(proto_root: Path = PROTO_ROOT) -> list[str]:
    """The .proto files to compile, relative to ``proto_root``, sorted."""
    files = sorted(p.relative_to(proto_root).as_posix() for p in (proto_root / PACKAGE_DIR).glob("*.proto"))
    if not files:
        raise SystemExit(f"gen_protos: no .proto files under {proto_root / PACKAGE_DIR}")
    return files


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc; returns the generated files (absolute paths) under ``out_dir``."""
    out_dir = Path(out_dir).resolve()
    proto_root = Path(proto_root).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I.",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(proto_root),
    ]
    # cwd = proto root and relative file names: the output never depends on where we run from.
    proc = subprocess.run(cmd, cwd=proto_root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gen_protos: protoc failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    # Stubs of .proto files that no longer exist would linger; remove them.
    expected = {Path(f).stem + suffix for f in proto_files(proto_root) for suffix in GENERATED_SUFFIXES}
    for stale in generated_files(out_dir / PACKAGE_DIR):
        if stale.name not in expected:
            stale.unlink()
    return generated_files(out_dir / PACKAGE_DIR)


def generated_files(package_dir: Path) -> list[Path]:
    """Generated stub files (not hand-written ones) in a package directory, sorted."""
    if not package_dir.is_dir():
        return []
    return sorted(p for p in package_dir.iterdir() if p.is_file() and p.name.endswith(GENERATED_SUFFIXES))


def drift(generated_dir: Path, committed_dir: Path) -> list[str]:
    """Human-readable lines, one per drifting file; empty when ``committed_dir`` is up to date."""
    fresh = {p.name: p for p in generated_files(Path(generated_dir))}
    committed = {p.name: p for p in generated_files(Path(committed_dir))}
    problems = []
    for name in sorted(fresh.keys() | committed.keys()):
        if name not in committed:
            problems.append(f"missing: {PACKAGE_DIR / name} (generated but not committed)")
        elif name not in fresh:
            problems.append(f"stale: {PACKAGE_DIR / name} (committed but no .proto generates it)")
        elif fresh[name].read_bytes() != committed[name].read_bytes():
            problems.append(f"differs: {PACKAGE_DIR / name}")
    return problems


def check(proto_root: Path = PROTO_ROOT, stub_root: Path = REPO) -> list[str]:
    """Regenerate into a temp dir and compare with the stubs under ``stub_root``."""
    with tempfile.TemporaryDirectory(prefix="crayfish-protos-") as tmp:
        generate(Path(tmp), proto_root)
        return drift(Path(tmp) / PACKAGE_DIR, Path(stub_root) / PACKAGE_DIR)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protos", type=Path, default=PROTO_ROOT,
                    help="proto root holding crayfish/v1/*.proto (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO,
                    help="output root; stubs land in OUT/crayfish/v1 (default: the repo root)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; compare a fresh generation with the stubs under --out, exit 1 on drift")
    args = ap.parse_args(argv)

    if args.check:
        problems = check(args.protos, args.out)
        if problems:
            print("gen_protos: generated stubs drifted from the .proto files:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            print("regenerate with: python tools/gen_protos.py", file=sys.stderr)
            return 1
        print(f"gen_protos: {args.out.resolve() / PACKAGE_DIR} is up to date")
        return 0

    for path in generate(args.out, args.protos):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
