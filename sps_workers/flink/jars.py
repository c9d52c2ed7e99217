"""The Kafka connector jar (flink-sql-connector-kafka, matched to apache-flink), fetched by Maven."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("CRAYFISH_CACHE_DIR", REPO_ROOT / ".cache"))
FLINK_LIB = CACHE_DIR / "flink" / "lib"
POM = Path(__file__).with_name("pom.xml")
CONNECTOR = "flink-sql-connector-kafka-5.0.0-2.2.jar"


def ensure_connector(quiet: bool = True) -> Path:
    """Path of the connector jar, fetched into .cache/flink/lib on first use (cached)."""
    jar = FLINK_LIB / CONNECTOR
    if jar.exists():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"Maven (mvn) is needed once to fetch {CONNECTOR} into {FLINK_LIB}")
    FLINK_LIB.mkdir(parents=True, exist_ok=True)
    with open(FLINK_LIB / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.exists():
            return jar
        cmd = [mvn, "-B", "-f", str(POM),
               "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={FLINK_LIB}"]
        if quiet:
            cmd.insert(1, "-q")
        subprocess.run(cmd, check=True)
    if not jar.exists():
        raise RuntimeError(f"Maven did not produce {jar}")
    return jar
