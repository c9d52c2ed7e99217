"""The Kafka source/sink jars of Spark Structured Streaming, matched to the installed pyspark.

pyspark ships Spark's own jars but not the Kafka connector. Maven fetches
``org.apache.spark:spark-sql-kafka-0-10_2.13:<pyspark version>`` and the runtime dependencies
Spark does not ship (``spark-token-provider-kafka-0-10_2.13``, ``kafka-clients``,
``commons-pool2``) into ``.cache/spark/<version>/`` once; later starts reuse them.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from crayfish.host.paths import cache_dir as host_cache_dir

POM = Path(__file__).with_name("pom.xml")
# What the connector needs beyond pyspark's own jars (scala, spark-sql, slf4j, codecs are there).
ARTIFACTS = ("spark-sql-kafka-0-10_2.13", "spark-token-provider-kafka-0-10_2.13", "kafka-clients", "commons-pool2")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"


class JarsError(RuntimeError):
    pass


def connector_jar(spark_version: str, directory: Path) -> Path:
    return directory / f"spark-sql-kafka-0-10_2.13-{spark_version}.jar"


def ensure_jars(spark_version: str, cache_dir: Path | None = None, quiet: bool = True) -> list[Path]:
    """The connector jars for ``spark_version`` (fetched with Maven on first use, then cached)."""
    directory = Path(cache_dir or host_cache_dir("spark")) / spark_version
    stamp = directory / ".complete"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{spark_version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and connector_jar(spark_version, directory).exists()):
            _fetch(spark_version, directory, quiet)
            if not connector_jar(spark_version, directory).exists():
                raise JarsError(f"Maven did not deliver {connector_jar(spark_version, directory).name}")
            stamp.write_text(spark_version + "\n")
    jars = sorted(directory.glob("*.jar"))
    missing = [a for a in ARTIFACTS if not any(j.name.startswith(a + "-") for j in jars)]
    if missing:
        raise JarsError(f"{directory}: missing {', '.join(missing)}; delete the folder to fetch again")
    return jars


def _fetch(spark_version: str, directory: Path, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsError("Maven (mvn) is needed once to fetch Spark's Kafka connector "
                        f"(spark-sql-kafka-0-10_2.13:{spark_version}) into {directory}")
    for old in directory.glob("*.jar"):
        old.unlink()
    cmd = [mvn, "-B", "-f", str(POM), DEPENDENCY_PLUGIN, f"-Dspark.version={spark_version}",
           "-DincludeScope=runtime", f"-DincludeArtifactIds={','.join(ARTIFACTS)}",
           f"-DoutputDirectory={directory}"]
    if quiet:
        cmd.insert(1, "-q")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
        raise JarsError(f"could not fetch org.apache.spark:spark-sql-kafka-0-10_2.13:{spark_version} "
                        f"(it must match pyspark {spark_version} exactly; is that version on Maven "
                        f"Central?):\n{tail}")
