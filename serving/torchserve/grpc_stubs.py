"""Python stubs for TorchServe's gRPC APIs, generated from the ``.proto`` files TorchServe ships.

The protos (``inference.proto``, ``management.proto`` and the ``google/rpc/status.proto`` they
import) are inside ``ts/frontend/model-server.jar`` of the installed ``torchserve`` wheel; nothing of
them is copied into this repository. :func:`load` generates the stubs once, into
``<repo>/.cache/torchserve/grpc/ts-<torchserve version>/torchserve_grpc/`` (or
``$CRAYFISH_TORCHSERVE_STUBS_DIR``), and imports them from there:

1. find the jar: the ``ts`` package of this interpreter, else the ``torch`` environment's
   (``.envs/torch/lib/python3.*/site-packages/ts``) -- the client runs in the core environment,
   where TorchServe is not installed;
2. extract the three protos (plain zip reading, no Java) and run ``grpc_tools.protoc`` -- in
   process when ``grpcio-tools`` is importable (core env with the ``dev`` extra, the torch env),
   else with the torch environment's interpreter;
3. make the output a package: the ``*_pb2_grpc`` modules import their ``*_pb2`` relatively, and
   ``google.rpc.status_pb2`` is taken from ``googleapis-common-protos`` when installed, else from
   the generated ``rpc_status_pb2`` (so the same proto file is never registered twice).

The launcher calls :func:`load` before starting the server, so clients find the stubs ready;
a client calling it first generates them itself (a file lock serialises concurrent generators).
"""

from __future__ import annotations

import fcntl
import glob
import importlib
import importlib.resources as resources
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

from crayfish.host.envs import env_dir, python_for
from crayfish.host.paths import cache_dir

PACKAGE = "torchserve_grpc"
PROTOS = ("inference.proto", "management.proto", "google/rpc/status.proto")
GEN_VERSION = 1

_loaded: SimpleNamespace | None = None


def stubs_root() -> Path:
    env = os.environ.get("CRAYFISH_TORCHSERVE_STUBS_DIR")
    return Path(env) if env else cache_dir("torchserve", "grpc")


def find_ts_home() -> Path:
    """The directory of the installed ``ts`` package (here, else in the torch environment)."""
    spec = importlib.util.find_spec("ts")
    if spec is not None and spec.origin and (Path(spec.origin).parent / "frontend" / "model-server.jar").is_file():
        return Path(spec.origin).parent
    for cand in sorted(glob.glob(str(env_dir("torch") / "lib" / "python3*" / "site-packages" / "ts"))):
        if (Path(cand) / "frontend" / "model-server.jar").is_file():
            return Path(cand)
    raise FileNotFoundError("TorchServe is not installed here nor in the torch environment: "
                            "run `crayfish env build torch`")


def torchserve_version(ts_home: Path | None = None) -> str:
    ts_home = ts_home or find_ts_home()
    return (ts_home / "version.txt").read_text().strip()


def _protoc(proto_dir: Path, out_dir: Path) -> None:
    args = ["-I", str(proto_dir), f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *PROTOS]
    try:
        # optional: grpcio-tools (the dev extra, the torch env); without it, protoc runs in the torch env
        from grpc_tools import protoc  # type: ignore[import-not-found]

        well_known = str(resources.files("grpc_tools") / "_proto")
        rc = protoc.main(["protoc", f"-I{well_known}", *args])
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc exited {rc}")
        return
    except ImportError:
        pass
    py = python_for("torch", build=False)
    code = ("import sys, importlib.resources as r; from grpc_tools import protoc; "
            "sys.exit(protoc.main(['protoc', '-I' + str(r.files('grpc_tools') / '_proto')] + sys.argv[1:]))")
    subprocess.run([py, "-c", code, *args], check=True)


def _fix_imports(pkg: Path) -> None:
    for f in pkg.glob("*_pb2_grpc.py"):
        text = f.read_text()
        text = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
        f.write_text(text)
    inf = pkg / "inference_pb2.py"
    text = inf.read_text()
    old = "from google.rpc import status_pb2 as google_dot_rpc_dot_status__pb2\n"
    if old not in text:
        raise RuntimeError("unexpected generated inference_pb2.py (google.rpc import not found)")
    text = text.replace(old, "try:  # googleapis-common-protos, when installed\n    " + old
                        + "except ImportError:  # else the stub generated next to this one\n"
                        "    from . import rpc_status_pb2 as google_dot_rpc_dot_status__pb2\n")
    inf.write_text(text)


def generate(ts_home: Path | None = None, force: bool = False) -> Path:
    """Generate the stubs (if missing) and return the directory to put on ``sys.path``."""
    ts_home = ts_home or find_ts_home()
    version = torchserve_version(ts_home)
    root = stubs_root()
    out = root / f"ts-{version}"
    stamp = out / PACKAGE / "GENERATED"
    want = f"torchserve {version}, generator v{GEN_VERSION}\n"
    if not force and stamp.is_file() and stamp.read_text() == want:
        return out
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and stamp.is_file() and stamp.read_text() == want:
            return out
        with tempfile.TemporaryDirectory(prefix=".gen-", dir=root) as tmp:
            tmp = Path(tmp)
            protos, gen = tmp / "protos", tmp / "gen"
            with zipfile.ZipFile(ts_home / "frontend" / "model-server.jar") as jar:
                for name in PROTOS:
                    target = protos / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(jar.read(name))
            pkg = gen / PACKAGE
            pkg.mkdir(parents=True)
            _protoc(protos, pkg)
            shutil.move(str(pkg / "google" / "rpc" / "status_pb2.py"), str(pkg / "rpc_status_pb2.py"))
            shutil.rmtree(pkg / "google")
            _fix_imports(pkg)
            (pkg / "__init__.py").write_text(
                f'"""TorchServe {version} gRPC stubs, generated by serving.torchserve.grpc_stubs from '
                f'the protos in its model-server.jar."""\n')
            (pkg / "GENERATED").write_text(want)
            if out.exists():
                shutil.rmtree(out)
            os.replace(gen, out)
    return out


def load() -> SimpleNamespace:
    """``SimpleNamespace(inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc,
    version)``, generating the stubs first when needed."""
    global _loaded
    if _loaded is not None:
        return _loaded
    out = generate()
    if str(out) not in sys.path:
        sys.path.append(str(out))
    mods = {m: importlib.import_module(f"{PACKAGE}.{m}")
            for m in ("inference_pb2", "inference_pb2_grpc", "management_pb2", "management_pb2_grpc")}
    _loaded = SimpleNamespace(**mods, version=out.name.removeprefix("ts-"))
    return _loaded


if __name__ == "__main__":
    print(generate(force="--force" in sys.argv))
