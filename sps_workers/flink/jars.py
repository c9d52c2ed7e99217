"""The Kafka connector jar (flink-sql-connector-kafka, matched to apache-flink), fetched by Maven."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from crayfish.host.paths import cache_dir

POM = Path(__file__).with_name("pom.xml")
CONNECTOR = "flink-sql-connector-kafka-5.0.0-2.2.jar"


def _lib() -> Path:
    return cache_dir("flink", "lib")


def ensure_connector(quiet: bool = True) -> Path:
    """Path of the connector jar, fetched into .cache/flink/lib on first use (cached)."""
    jar = _lib() / CONNECTOR
    if jar.exists():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"Maven (mvn) is needed once to fetch {CONNECTOR} into {_lib()}")
    _lib().mkdir(parents=True, exist_ok=True)
    with open(_lib() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.exists():
            return jar
        cmd = [mvn, "-B", "-f", str(POM),
               "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={_lib()}"]
        if quiet:
            cmd.insert(1, "-q")
        subprocess.run(cmd, check=True)
    if not jar.exists():
        raise RuntimeError(f"Maven did not produce {jar}")
    return jar
