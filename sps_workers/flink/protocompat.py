"""crayfish.v1 stubs that import under the flink environment's protobuf runtime.

apache-flink 2.2 pins apache-beam <= 2.61, which caps protobuf below 6 (and grpcio below 1.66). The
committed stubs in crayfish/v1 are gencode 6.31.1 and refuse to load under an older runtime
("Runtime version cannot be older than the linked gencode version"). Here the same .proto files are
compiled with this environment's own grpcio-tools (tools/gen_protos.py, pinned in
envs/flink/requirements.txt) into ``.cache/flink/stubs/<hash>/crayfish/v1`` once (the driver does
it before submitting the job; a file lock and an atomic rename make concurrent first runs safe),
and :func:`install` registers that directory as the ``crayfish.v1`` package before anything
imports it. The committed stubs are never touched; where the runtime is new enough (the core
environment) :func:`install` does nothing.

Every module of this engine that is unpickled in a Flink Python worker calls :func:`install`
before importing crayfish code, so the workers load the same generated stubs.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from google.protobuf import __version__ as protobuf_version

import crayfish
from crayfish.host.paths import REPO_ROOT, cache_dir

COMMITTED = REPO_ROOT / "crayfish" / "v1"
PROTOS = REPO_ROOT / "protos" / "crayfish" / "v1"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def committed_gencode_version() -> tuple[int, ...]:
    head = (COMMITTED / "batch_pb2.py").read_text()[:600]
    m = re.search(r"Protobuf Python Version: ([\d.]+)", head)
    return _version_tuple(m.group(1)) if m else (0,)


def runtime_version() -> tuple[int, ...]:
    return _version_tuple(protobuf_version)


def needed() -> bool:
    """True where the committed stubs cannot load (runtime older than their gencode)."""
    return runtime_version() < committed_gencode_version()


def stubs_dir() -> Path:
    """Output root of the generated stubs for this runtime + these .proto files (not created)."""
    try:
        tools = version("grpcio-tools")
    except Exception:  # noqa: BLE001 - reported by ensure_generated
        tools = "none"
    h = hashlib.sha256(f"{protobuf_version}|{tools}".encode())
    for p in sorted(PROTOS.glob("*.proto")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return cache_dir("flink", "stubs", h.hexdigest()[:16])


def ensure_generated() -> Path:
    """Generate the stubs once (cached); returns the output root holding crayfish/v1."""
    root = stubs_dir()
    if (root / "crayfish" / "v1" / "__init__.py").exists():
        return root
    if importlib.util.find_spec("grpc_tools") is None:
        raise RuntimeError("grpcio-tools is needed to generate crayfish.v1 stubs for protobuf "
                           f"{'.'.join(map(str, runtime_version()))}; it is in envs/flink/requirements.txt")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "crayfish" / "v1" / "__init__.py").exists():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=root.parent))
        try:
            proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "gen_protos.py"), "--out", str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"generating crayfish.v1 stubs failed:\n{proc.stderr}{proc.stdout}")
            (tmp / "crayfish" / "v1" / "__init__.py").write_text("")
            tmp.chmod(0o755)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def install() -> None:
    """Make ``crayfish.v1`` the generated package when the committed one cannot load. Idempotent."""
    mod = sys.modules.get("crayfish.v1")
    if mod is not None:
        if getattr(mod, "__crayfish_generated__", False) or not needed():
            return
        raise RuntimeError("crayfish.v1 was imported before sps_workers.flink.protocompat.install()")
    if not needed():
        return
    pkg_dir = ensure_generated() / "crayfish" / "v1"
    spec = importlib.util.spec_from_file_location("crayfish.v1", pkg_dir / "__init__.py",
                                                  submodule_search_locations=[str(pkg_dir)])
    mod = importlib.util.module_from_spec(spec)
    mod.__crayfish_generated__ = True
    sys.modules["crayfish.v1"] = mod
    spec.loader.exec_module(mod)
    crayfish.v1 = mod
