"""Start, wait for and stop a single-node Apache Kafka (KRaft) broker on 127.0.0.1.

The broker is real Apache Kafka (``kafka.Kafka`` from the ``kafka_2.13`` jar), run with the JVM from
PATH/JAVA_HOME. Ports are picked free at start. Readiness = the port accepts connections AND an
admin metadata call answers (never a fixed sleep).

State of a started broker is written to ``<state_dir>/broker.json`` so ``crayfish broker stop`` in
another process can find it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("CRAYFISH_CACHE_DIR", REPO_ROOT / ".cache"))
KAFKA_LIB = CACHE_DIR / "kafka" / "lib"
POM = Path(__file__).with_name("pom.xml")

POLL_S = 0.1  # readiness polling interval

# Large enough for ResNet50 batches of 8 (8*224*224*3 float32 = 4.8 MB raw; ~13 MB as crayfish-json).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class BrokerError(RuntimeError):
    pass


@dataclass
class BrokerHandle:
    bootstrap: str
    pid: int
    data_dir: str
    log_file: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_jars(quiet: bool = True) -> Path:
    """Fetch the Kafka jars with Maven unless they are cached already."""
    if KAFKA_LIB.is_dir() and any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        return KAFKA_LIB
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka jars; install it or give kafka.bootstrap")
    KAFKA_LIB.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-f", str(POM),
           "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={KAFKA_LIB}"]
    if quiet:
        cmd.insert(1, "-q")
    subprocess.run(cmd, check=True)
    return KAFKA_LIB


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java (17+) is needed to run the Kafka broker")
    return java


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data_dir / 'logs'}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        f"message.max.bytes={MAX_MESSAGE_BYTES}",
        f"replica.fetch.max.bytes={MAX_MESSAGE_BYTES}",
        f"socket.request.max.bytes={MAX_MESSAGE_BYTES + 1024 * 1024}",
        "log.flush.interval.messages=9223372036854775807",
        "num.network.threads=2",
        "num.io.threads=2",
        "background.threads=2",
        "",
    ])


def wait_ready(bootstrap: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None,
               log_file: str | None = None) -> None:
    """Wait until the broker's port is open and an admin metadata call answers."""
    from confluent_kafka.admin import AdminClient

    from crayfish.kafka import admin_config

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_file).read_text()[-3000:] if log_file and Path(log_file).exists() else ""
            raise BrokerError(f"Kafka exited with code {proc.returncode} during start\n{tail}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
        except OSError:
            time.sleep(POLL_S)
            continue
        admin = AdminClient(admin_config(bootstrap))
        try:
            md = admin.list_topics(timeout=2.0)
            if md.brokers:
                return
        except Exception:  # noqa: BLE001 - broker still starting; retry until the deadline
            pass
        time.sleep(POLL_S)
    raise BrokerError(f"Kafka at {bootstrap} not ready after {timeout_s:.0f}s")


def start(state_dir: Path | None = None, heap: str = "1g", timeout_s: float = 90.0) -> BrokerHandle:
    """Format a fresh KRaft log dir and start the broker; returns once it answers."""
    lib = ensure_jars()
    state_dir = Path(state_dir or CACHE_DIR / "broker")
    data_dir = state_dir / f"kafka-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    port, controller_port = free_port(), free_port()
    props = data_dir / "server.properties"
    props.write_text(_server_properties(data_dir, port, controller_port))
    log_file = data_dir / "kafka.log"
    (data_dir / "log4j2.xml").write_text(LOG4J2_XML.format(log=log_file))

    java = _java()
    classpath = os.pathsep.join(str(p) for p in sorted(lib.glob("*.jar")))
    jvm = [java, "-Xms256m", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={data_dir / 'log4j2.xml'}",
           f"-Dkafka.logs.dir={data_dir}", "-cp", classpath]
    cluster_id = _random_cluster_id()
    fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                                "--ignore-formatted"], capture_output=True, text=True)
    if fmt.returncode != 0:
        raise BrokerError(f"kafka storage format failed: {fmt.stderr or fmt.stdout}")
    with open(data_dir / "stdout.log", "wb") as out:
        proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_ready(bootstrap, timeout_s, proc, str(log_file))
    except BaseException:
        _terminate(proc.pid)
        raise
    handle = BrokerHandle(bootstrap=bootstrap, pid=proc.pid, data_dir=str(data_dir), log_file=str(log_file))
    (state_dir / "broker.json").write_text(handle.to_json())
    return handle


def _random_cluster_id() -> str:
    import base64

    # A Kafka cluster id is 16 bytes in URL-safe base64; one starting with '-' would be read as an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cid[0] != "-":
            return cid


def _terminate(pid: int, timeout_s: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(POLL_S)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(handle: BrokerHandle, keep_data: bool = False) -> None:
    """Stop the broker cleanly (SIGTERM, SIGKILL after 30 s) and remove its data."""
    _terminate(handle.pid)
    if not keep_data:
        shutil.rmtree(handle.data_dir, ignore_errors=True)


def read_state(state_dir: Path | None = None) -> BrokerHandle | None:
    path = Path(state_dir or CACHE_DIR / "broker") / "broker.json"
    if not path.exists():
        return None
    return BrokerHandle(**json.loads(path.read_text()))


def clear_state(state_dir: Path | None = None) -> None:
    path = Path(state_dir or CACHE_DIR / "broker") / "broker.json"
    path.unlink(missing_ok=True)
