"""Start, wait for and stop a single-node Apache Kafka (KRaft) broker on 127.0.0.1.

The broker is real Apache Kafka (``kafka.Kafka`` from the ``kafka_2.13`` jar), run with the JVM from
PATH/JAVA_HOME. Ports are picked free at start. Readiness = the port accepts connections AND an
admin metadata call answers (never a fixed sleep).

State of a started broker is written to ``<state_dir>/broker.json`` so ``crayfish broker stop`` in
another process can find it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from crayfish.host.paths import cache_dir
from crayfish.host.ports import free_port
from crayfish.host.procs import ProcessRecord, stop_tree
from crayfish.kafka import MAX_MESSAGE_BYTES, admin_config

POM = Path(__file__).with_name("pom.xml")

POLL_S = 0.1  # readiness polling interval

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




def kafka_lib() -> Path:
    return cache_dir("kafka", "lib")


def default_state_dir() -> Path:
    return cache_dir("broker")


def ensure_jars(quiet: bool = True) -> Path:
    """Fetch the Kafka jars with Maven unless they are cached already."""
    lib = kafka_lib()
    if lib.is_dir() and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka jars; install it or give kafka.bootstrap")
    lib.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-f", str(POM),
           "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={lib}"]
    if quiet:
        cmd.insert(1, "-q")
    subprocess.run(cmd, check=True)
    return lib


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


def merge_properties(text: str, properties: dict[str, str]) -> str:
    """``text`` (a .properties file) with ``properties`` set: a key already there gets its new
    value in place, the others are appended."""
    todo = dict(properties)
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(property_line(key, todo.pop(key)) if key in todo and "=" in line else line)
    lines += [property_line(k, v) for k, v in todo.items()]
    return "\n".join(lines) + "\n"


def property_line(key: str, value: str) -> str:
    """``key=value`` as Java's ``Properties.load`` reads it back (multi-line values, e.g. inline
    PEM, and backslashes escaped)."""
    value = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"{key}={value}"


def wait_ready(bootstrap: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None,
               log_file: str | None = None, client=None) -> None:
    """Wait until the broker's port is open and an admin metadata call answers."""

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
        admin = AdminClient(admin_config(bootstrap, client))
        try:
            md = admin.list_topics(timeout=2.0)
            if md.brokers:
                return
        except Exception:  # noqa: BLE001 - broker still starting; retry until the deadline
            pass
        time.sleep(POLL_S)
    raise BrokerError(f"Kafka at {bootstrap} not ready after {timeout_s:.0f}s")


def kafka_command(data_dir: Path, port: int, controller_port: int, heap: str = "1g",
                  log_file: Path | None = None, *, properties: dict[str, str] | None = None,
                  format_args: Sequence[str] = ()) -> list[str]:
    """Prepare a fresh KRaft log dir in ``data_dir`` (server.properties, log4j2.xml, formatted
    storage) and return the command that runs the broker on 127.0.0.1:``port``: the one way this
    project runs Kafka (``start`` below, the native stack, and the secured broker of ``secure``).

    ``properties`` are set over the plain ones (a key given replaces its line: the secured broker
    gives its own listeners); ``format_args`` go to ``kafka-storage format`` (e.g. ``--add-scram``).
    server.properties is written readable by its owner only (it may hold the broker's secrets)."""
    lib = ensure_jars()
    props = data_dir / "server.properties"
    text = _server_properties(data_dir, port, controller_port)
    if properties:
        text = merge_properties(text, properties)
    props.touch(mode=0o600)
    props.write_text(text)
    log_file = log_file or data_dir / "kafka.log"
    (data_dir / "log4j2.xml").write_text(LOG4J2_XML.format(log=log_file))
    jvm = [_java(), "-Xms256m", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={data_dir / 'log4j2.xml'}",
           f"-Dkafka.logs.dir={data_dir}", "-cp", os.pathsep.join(str(p) for p in sorted(lib.glob("*.jar")))]
    fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", _random_cluster_id(), "-c", str(props),
                                "--ignore-formatted", *format_args], capture_output=True, text=True)
    if fmt.returncode != 0:
        raise BrokerError(f"kafka storage format failed: {fmt.stderr or fmt.stdout}")
    return jvm + ["kafka.Kafka", str(props)]


def start(state_dir: Path | None = None, heap: str = "1g", timeout_s: float = 90.0) -> BrokerHandle:
    """Format a fresh KRaft log dir and start the broker; returns once it answers."""
    state_dir = Path(state_dir or default_state_dir())
    data_dir = state_dir / f"kafka-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    port, controller_port = free_port(), free_port()
    log_file = data_dir / "kafka.log"
    cmd = kafka_command(data_dir, port, controller_port, heap, log_file)
    with open(data_dir / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_ready(bootstrap, timeout_s, proc, str(log_file))
    except BaseException:
        stop_tree(ProcessRecord.of(proc.pid))
        proc.wait(10)
        raise
    handle = BrokerHandle(bootstrap=bootstrap, pid=proc.pid, data_dir=str(data_dir), log_file=str(log_file))
    (state_dir / "broker.json").write_text(handle.to_json())
    return handle


def _random_cluster_id() -> str:
    # A Kafka cluster id is 16 bytes in URL-safe base64; one starting with '-' would be read as an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cid[0] != "-":
            return cid


def _reap(pid: int) -> None:
    """Collect the exit status of a broker this process started (else it stays a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:   # not our child (`crayfish broker stop` from another process)
        pass


def stop(handle: BrokerHandle, keep_data: bool = False) -> None:
    """Stop the broker cleanly (SIGTERM, SIGKILL after 30 s) and remove its data."""
    stop_tree(ProcessRecord.of(handle.pid))
    _reap(handle.pid)
    if not keep_data:
        shutil.rmtree(handle.data_dir, ignore_errors=True)


def read_state(state_dir: Path | None = None) -> BrokerHandle | None:
    path = Path(state_dir or default_state_dir()) / "broker.json"
    if not path.exists():
        return None
    return BrokerHandle(**json.loads(path.read_text()))


def clear_state(state_dir: Path | None = None) -> None:
    path = Path(state_dir or default_state_dir()) / "broker.json"
    path.unlink(missing_ok=True)
