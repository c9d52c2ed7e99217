"""Build the Java worker with Maven, once per version of its sources, into .cache/kafka-streams/.

The build is keyed by a hash of pom.xml, src/main/** and protos/crayfish/v1/*.proto: a fresh
clone builds on first use (Maven Central: Kafka Streams, protobuf-java + protoc, gRPC-Java,
ONNX Runtime, OpenTelemetry), later starts reuse ``.cache/kafka-streams/<hash>/``, and any
change to those files builds a new one. Concurrent starts wait on one file lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from crayfish.host.builds import CachedBuilds
from crayfish.host.paths import REPO_ROOT, cache_dir

MODULE_DIR = Path(__file__).resolve().parent
PROTOS_DIR = REPO_ROOT / "protos"
JAR_NAME = "crayfish-kafka-streams.jar"
KEEP_BUILDS = 2  # this one and the one before (a worker started earlier may still run from it)


class BuildError(RuntimeError):
    pass


def _cache() -> Path:
    """Where the builds go: ``$CRAYFISH_KSTREAMS_CACHE``, else ``<cache>/kafka-streams``."""
    env = os.environ.get("CRAYFISH_KSTREAMS_CACHE")
    return Path(env) if env else cache_dir("kafka-streams")


def source_files(module_dir: Path = MODULE_DIR, protos_dir: Path = PROTOS_DIR) -> list[tuple[str, Path]]:
    """(stable name, path) of every input of the build."""
    files = [("pom.xml", module_dir / "pom.xml")]
    files += sorted((f"src/{p.relative_to(module_dir / 'src').as_posix()}", p)
                    for p in (module_dir / "src" / "main").rglob("*") if p.is_file())
    files += sorted((f"protos/{p.name}", p) for p in (protos_dir / "crayfish" / "v1").glob("*.proto"))
    return files


def _build(digest: str, out: Path, log) -> None:
    work = _cache() / f"build-{digest}"
    shutil.rmtree(work, ignore_errors=True)
    log_path = _cache() / f"build-{digest}.log"
    log(f"kafka-streams: building the Java worker ({digest}) with Maven; log: {log_path}")
    t0 = time.monotonic()
    rc = maven(["-Dcrayfish.build.dir=" + str(work), "-DskipTests", "package"], log_path)
    if rc != 0 or not (work / JAR_NAME).is_file():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise BuildError(f"kafka-streams: Maven build failed (exit {rc}); {log_path}:\n{tail}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.move(str(work / JAR_NAME), out / JAR_NAME)
    shutil.move(str(work / "lib"), out / "lib")
    shutil.rmtree(work, ignore_errors=True)
    log(f"kafka-streams: built in {time.monotonic() - t0:.0f}s -> {out / JAR_NAME}")


def maven(args: list[str], log_path: Path) -> int:
    """Run Maven on the module: offline first (everything cached: no repository round trips),
    online when something is missing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BuildError("kafka-streams: Maven (mvn) is needed to build the Java worker; install Maven 3.8+ "
                         "and a JDK 17+")
    base = [mvn, "-B", "-q", "-f", str(MODULE_DIR / "pom.xml")]
    with open(log_path, "wb") as f:
        rc = subprocess.run([*base, "-o", *args], stdout=f, stderr=subprocess.STDOUT, cwd=MODULE_DIR).returncode
    if rc != 0:
        with open(log_path, "wb") as f:
            rc = subprocess.run([*base, *args], stdout=f, stderr=subprocess.STDOUT, cwd=MODULE_DIR).returncode
    return rc


# source_hash(module_dir, protos_dir), build_dir(digest), is_built(digest), ensure_built(log, force)
BUILDS = CachedBuilds(_cache, source_files, JAR_NAME, _build, keep=KEEP_BUILDS)
source_hash, build_dir, is_built, ensure_built = BUILDS.source_hash, BUILDS.build_dir, BUILDS.is_built, BUILDS.ensure_built
