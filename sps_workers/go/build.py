"""Build the Go worker once per version of its sources, into .cache/go/<hash>/.

The build is keyed by a hash of go.mod, go.sum, the Go sources (``*.go``, tests excluded) and
protos/crayfish/v1/*.proto: a fresh clone builds on first use, later starts reuse
``.cache/go/<hash>/crayfish-go-worker``, and any change to those files builds a new one. Concurrent
starts wait on one file lock.

How: the sources are copied into a work tree (``.cache/go/work-<hash>/``), the Go stubs of
``protos/`` are generated into its ``pb/`` package (nothing generated is committed) by
protoc-gen-go and protoc-gen-go-grpc at the versions pinned in go.mod (its ``tool`` lines), run
by protoc (``grpc_tools.protoc`` of the venv) or, without it, by the buf CLI of
``protos/node_modules``, then ``go build`` (cgo: ONNX Runtime's C API). The Go module cache and
build cache live under ``.cache/go/`` too (``mod/``, ``gocache/``): modules come from the Go module
proxy once, then everything works offline. Needs Go >= 1.26 and a C compiler.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crayfish.host.builds import CachedBuilds
from crayfish.host.paths import REPO_ROOT, cache_dir

MODULE_DIR = Path(__file__).resolve().parent
PROTOS_DIR = REPO_ROOT / "protos"
GO_MODULE = "crayfish/go-worker"   # go.mod's module path; the stubs are its package "pb"
BINARY = "crayfish-go-worker"
KEEP_BUILDS = 2  # this one and the one before (a worker started earlier may still run from it)
PLUGINS = ("google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/grpc/cmd/protoc-gen-go-grpc")


class BuildError(RuntimeError):
    pass


def _cache() -> Path:
    """Where the builds go: ``$CRAYFISH_GO_CACHE``, else ``<cache>/go``."""
    env = os.environ.get("CRAYFISH_GO_CACHE")
    return Path(env) if env else cache_dir("go")


def go_env() -> dict[str, str]:
    """The environment of every go command: its caches under ours, this toolchain only, cgo on."""
    root = cache_dir("go")
    env = dict(os.environ, GOMODCACHE=str(root / "mod"), GOCACHE=str(root / "gocache"), GOTOOLCHAIN="local",
               GOFLAGS="-modcacherw", CGO_ENABLED="1")
    env.setdefault("GOPATH", str(root / "gopath"))
    return env


def source_files(module_dir: Path = MODULE_DIR, protos_dir: Path = PROTOS_DIR) -> list[tuple[str, Path]]:
    """(stable name, path) of every input of the build."""
    files = [(name, module_dir / name) for name in ("go.mod", "go.sum")]
    files += sorted((p.name, p) for p in module_dir.glob("*.go") if not p.name.endswith("_test.go"))
    files += sorted((f"protos/{p.name}", p) for p in (protos_dir / "crayfish" / "v1").glob("*.proto"))
    return files


def _build(digest: str, out: Path, log) -> None:
    work = _cache() / f"work-{digest}"
    log_path = _cache() / f"build-{digest}.log"
    log(f"go: building the Go worker ({digest}); log: {log_path}")
    t0 = time.monotonic()
    with open(log_path, "wb") as logf:
        prepare_tree(work, logf)
        _run([go(), "build", "-trimpath", "-o", str(work / BINARY), "."], work / "src", logf)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.move(str(work / BINARY), out / BINARY)
    shutil.rmtree(work, ignore_errors=True)
    log(f"go: built in {time.monotonic() - t0:.0f}s -> {out / BINARY}")


def prepare_tree(work: Path, logf) -> Path:
    """A buildable copy of the module in ``work/src`` (sources, tests, generated ``pb/``)."""
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    src.mkdir(parents=True)
    for p in [MODULE_DIR / "go.mod", MODULE_DIR / "go.sum", *MODULE_DIR.glob("*.go")]:
        shutil.copy2(p, src / p.name)
    (src / "pb").mkdir()
    bin_dir = work / "bin"
    _run([go(), "build", "-o", str(bin_dir) + os.sep, *PLUGINS], src, logf)
    generate_stubs(bin_dir, src, logf)
    return src


def generate_stubs(bin_dir: Path, src: Path, logf) -> None:
    """The Go messages and gRPC client of protos/crayfish/v1 into ``src/pb``."""
    protos = sorted(p.relative_to(PROTOS_DIR).as_posix() for p in (PROTOS_DIR / "crayfish" / "v1").glob("*.proto"))
    opt = ",".join([f"module={GO_MODULE}", *(f"M{p}={GO_MODULE}/pb" for p in protos)])
    if importlib.util.find_spec("grpc_tools") is not None:
        _run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS_DIR}",
              f"--plugin=protoc-gen-go={bin_dir / 'protoc-gen-go'}",
              f"--plugin=protoc-gen-go-grpc={bin_dir / 'protoc-gen-go-grpc'}",
              f"--go_out={src}", f"--go_opt={opt}", f"--go-grpc_out={src}", f"--go-grpc_opt={opt}", *protos],
             PROTOS_DIR, logf)
        return
    buf = PROTOS_DIR / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        raise BuildError("go: generating the stubs needs protoc (grpcio-tools: pip install -e '.[dev]') or the buf "
                         "CLI (make protos/node_modules/.installed)")
    template = src.parent / "buf.gen.yaml"
    plugins = "".join(f"  - local: {bin_dir / name}\n    out: {src}\n    opt: [{opt}]\n"
                      for name in ("protoc-gen-go", "protoc-gen-go-grpc"))
    template.write_text(f"version: v2\nplugins:\n{plugins}")
    _run([str(buf), "generate", "--template", str(template), "."], PROTOS_DIR, logf)


def go() -> str:
    found = shutil.which("go")
    if found is None:
        raise BuildError("go: the Go toolchain (go >= 1.26) is needed to build the Go worker; see https://go.dev/dl")
    return found


def _run(cmd: list[str], cwd: Path, logf) -> None:
    logf.write(f"$ {' '.join(cmd)}\n".encode())
    logf.flush()
    rc = subprocess.run(cmd, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT, env=go_env(),
                        check=False).returncode
    if rc != 0:
        logf.flush()
        tail = Path(logf.name).read_text(errors="replace")[-4000:]
        raise BuildError(f"go: `{' '.join(cmd[:3])} ...` failed (exit {rc}); {logf.name}:\n{tail}")


def go_test(log_path: Path, work: Path) -> int:
    """``go test ./...`` on a prepared copy of the module in ``work``; the exit status (output in log_path)."""
    with open(log_path, "wb") as logf:
        src = prepare_tree(work, logf)
        logf.write(b"$ go test -count=1 -v .\n")
        logf.flush()
        return subprocess.run([go(), "test", "-count=1", "-v", "."], cwd=src, stdout=logf, stderr=subprocess.STDOUT,
                              env=go_env(), check=False).returncode


# source_hash(module_dir, protos_dir), build_dir(digest), is_built(digest), ensure_built(log, force)
BUILDS = CachedBuilds(_cache, source_files, BINARY, _build, keep=KEEP_BUILDS)
source_hash, build_dir, is_built, ensure_built = BUILDS.source_hash, BUILDS.build_dir, BUILDS.is_built, BUILDS.ensure_built
