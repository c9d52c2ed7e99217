"""Build the trace backend of the native stack: Jaeger v2 from the Go module proxy (no Docker).

    .venv/bin/python observability/jaeger/build.py            # -> .cache/jaeger/bin/jaeger (cached)
    .venv/bin/python observability/jaeger/build.py --force    # rebuild
    make jaeger                                               # the same

Jaeger v2 cannot be ``go install``-ed at a version (its go.mod has replace directives), so the
binary is built the way Go builds tools: a throwaway module under ``.cache/jaeger/mod`` records the
tool with ``go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@<version>`` and ``go build``
writes ``.cache/jaeger/bin/jaeger``. The module version v1.76.0 is Jaeger v2.13.0 (the repository
tags both lines; the v1 tag is the one Go resolves). The first build compiles the whole
OpenTelemetry collector (~15-30 min on 2 cores, niced); later calls return at once while the binary
exists and ``jaeger.version`` names the pinned version. Downloads land in the Go module cache
(``go env GOMODCACHE``), so a second machine downloads again but this one does not.

A source-built Jaeger has only a placeholder web page at ``/``: its HTTP query API (``/api/services``,
``/api/traces``) works, which is what the stack and its test use. The configuration the stack runs
it with is ``observability/jaeger/config.yaml`` (every listener on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crayfish.host.paths import cache_dir


def binary() -> Path:
    return cache_dir("jaeger", "bin", "jaeger")


def version_file() -> Path:
    return cache_dir("jaeger", "bin", "jaeger.version")


def _module_dir() -> Path:
    return cache_dir("jaeger", "mod")


PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
VERSION = "v1.76.0"           # = Jaeger v2.13.0; the Go proxy lists it (see the module docstring)
CONFIG = Path(__file__).with_name("config.yaml")


class BuildError(RuntimeError):
    pass


def go_binary() -> str:
    """``go`` from PATH, else the standard install location /usr/local/go/bin/go."""
    found = shutil.which("go")
    if found:
        return found
    if Path("/usr/local/go/bin/go").exists():
        return "/usr/local/go/bin/go"
    raise BuildError("Go is needed to build Jaeger (https://go.dev/dl/); put `go` on PATH")


def is_built(version: str = VERSION) -> bool:
    return binary().exists() and os.access(binary(), os.X_OK) and version_file().exists() \
        and version_file().read_text().strip() == version


def ensure_jaeger(version: str = VERSION, force: bool = False, log=print, jobs: int | None = None) -> Path:
    """Return the path of the Jaeger binary, building it first when missing (or ``force``)."""
    if is_built(version) and not force:
        return binary()
    go = go_binary()
    _module_dir().mkdir(parents=True, exist_ok=True)
    binary().parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    env["PATH"] = os.pathsep.join([str(Path(go).parent), env.get("PATH", "")])

    def step(*args: str) -> None:
        log(f"[jaeger build] {' '.join(args)}")
        # niced: the first build is long and the machine is shared
        res = subprocess.run([go, *args], cwd=_module_dir(), env=env, preexec_fn=lambda: os.nice(10))
        if res.returncode != 0:
            raise BuildError(f"`go {' '.join(args)}` failed (exit {res.returncode}) in {_module_dir()}")

    t0 = time.monotonic()
    if not (_module_dir() / "go.mod").exists():
        step("mod", "init", "crayfish.local/jaeger-build")
    step("get", "-tool", f"{PACKAGE}@{version}")
    tmp = binary().with_suffix(".tmp")
    build = ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp)]
    if jobs:
        build[1:1] = ["-p", str(jobs)]
    step(*build, PACKAGE)
    os.replace(tmp, binary())
    version_file().write_text(version + "\n")
    log(f"[jaeger build] {binary()} ({version}) built in {time.monotonic() - t0:.0f} s")
    return binary()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="observability/jaeger/build.py", description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the binary exists")
    ap.add_argument("--version", default=VERSION, help=f"module version of {PACKAGE} (default {VERSION})")
    ap.add_argument("--jobs", type=int, default=None, help="go build -p (default: Go's, the number of CPUs)")
    args = ap.parse_args(argv)
    try:
        path = ensure_jaeger(args.version, force=args.force, jobs=args.jobs,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
