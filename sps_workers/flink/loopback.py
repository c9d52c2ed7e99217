"""Keep PyFlink's Beam gRPC servers on 127.0.0.1.

PyFlink (process mode) reaches each Python worker through Beam gRPC servers inside the JVM. Beam's
``ServerFactory$InetSocketAddressServerFactory`` (vendored in flink-python) binds them with
``NettyServerBuilder.forPort``: every interface, whatever Flink's bind-host settings say. We ship a
replacement of that one nested class (``loopback/…/ServerFactory.java``), compiled with ``javac``
against the installed flink-python jar on first use and cached in ``.cache/flink/loopback/``, and
put it on the class path before flink-python:

- local mini-cluster: :func:`use_in_gateway` points ``FLINK_LIB_DIR`` at a folder holding the
  wheel's ``lib/`` jars plus ours (PyFlink's gateway puts ``FLINK_LIB_DIR`` jars first, then
  ``opt/flink-python``);
- a session cluster: put :func:`ensure_jar` into the cluster's ``lib/`` (Flink's scripts sort
  ``lib/``; the jar's name sorts before ``flink-*``). ``sps_workers.flink.cluster`` does it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from crayfish.host.paths import cache_dir

SOURCE = Path(__file__).with_name("loopback") / "org/apache/beam/sdk/fn/server/ServerFactory.java"
SHIPPED = "org/apache/beam/sdk/fn/server/ServerFactory$InetSocketAddressServerFactory.class"
JAR_NAME = "crayfish-beam-loopback.jar"  # sorts before flink-python-*.jar in a cluster's lib/


def flink_home() -> Path:
    # lazy: pyflink is only in .envs/flink, and job.py (so this module) is imported in .venv too
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def flink_python_jar(home: Path | None = None) -> Path:
    jars = sorted(((home or flink_home()) / "opt").glob("flink-python-*.jar"))
    if len(jars) != 1:
        raise RuntimeError(f"expected one flink-python jar in {(home or flink_home()) / 'opt'}, found {jars}")
    return jars[0]


def ensure_jar() -> Path:
    """The jar with the loopback-binding class, built for the installed flink-python (cached)."""
    fp = flink_python_jar()
    key = hashlib.sha256(SOURCE.read_bytes() + fp.name.encode()).hexdigest()[:16]
    out = cache_dir("flink", "loopback", key)
    jar = out / JAR_NAME
    if jar.exists():
        return jar
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.exists():
            return jar
        javac = shutil.which("javac")
        if javac is None:
            raise RuntimeError("javac (JDK 11+) is needed once to build " + JAR_NAME)
        with tempfile.TemporaryDirectory() as classes:
            subprocess.run([javac, "--release", "11", "-nowarn", "-cp", str(fp), "-d", classes, str(SOURCE)],
                           check=True, capture_output=True, text=True)
            tmp = out / (JAR_NAME + ".tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
                z.write(Path(classes) / SHIPPED, SHIPPED)
            tmp.replace(jar)
    return jar


def lib_dir(extra: list[Path] = ()) -> Path:
    """A folder of links: the wheel's lib/ jars, our jar and ``extra`` (cached per set of jars)."""
    jars = [*sorted((flink_home() / "lib").glob("*.jar")), ensure_jar(), *extra]
    key = hashlib.sha256("\n".join(str(j) for j in jars).encode()).hexdigest()[:16]
    d = cache_dir("flink", "gateway-lib", key)
    if not d.exists():
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=d.parent))
        for j in jars:
            (tmp / j.name).symlink_to(j)
        try:
            tmp.rename(d)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def use_in_gateway() -> None:
    """Before PyFlink starts its JVM: put the loopback class on its class path, unless the user
    chose a FLINK_LIB_DIR or another FLINK_HOME of their own. (PyFlink resets FLINK_LIB_DIR to the
    wheel's lib/ unless FLINK_HOME is set, hence both.)"""
    # The gateway JVM (and its mini-cluster) extracts jars and makes folders in java.io.tmpdir:
    # the service's own TMPDIR, removed when the service stops, even after a kill.
    os.environ["JVM_ARGS"] = " ".join(filter(None, [os.environ.get("JVM_ARGS"),
                                                    f"-Djava.io.tmpdir={tempfile.gettempdir()}"]))
    home = flink_home()
    if "FLINK_LIB_DIR" in os.environ or Path(os.environ.get("FLINK_HOME", home)).resolve() != home:
        return
    os.environ["FLINK_HOME"] = str(home)
    os.environ["FLINK_LIB_DIR"] = str(lib_dir())
