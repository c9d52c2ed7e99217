"""The Flink job and its driver: build the pipeline, submit it, report readiness, stop it cleanly.

Run by sps_workers.flink.__main__ in a session of its own (``python -m sps_workers.flink.job``).

The cluster's client properties (``WorkerSettings.kafka_client``: references to secrets only) are
resolved here, in the driver, into Java names (``KafkaClient.java()``, login module renamed for the
connector's relocated Kafka classes) and go into the Kafka source's and sink's DDL as
``'properties.<name>'`` options; the driver's lag client (:func:`crayfish.kafka.consumer_lag`) gets
them too. The DDL is never printed, and whatever the driver prints (:func:`log`, a failure's
traceback) has the secret values replaced by ``[redacted]`` (:func:`redact`): the worker's log and
the Flink logs lie in the run's folder.
"""

from __future__ import annotations

from sps_workers.flink import protocompat

protocompat.install()

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

from crayfish.host.paths import cache_dir  # noqa: E402
from crayfish.host.ports import free_port  # noqa: E402
from crayfish.kafka import MAX_MESSAGE_BYTES, consumer_lag  # noqa: E402
from crayfish.kafka_client import KafkaClient  # noqa: E402
from crayfish.kafka_client import redact as redact_secrets  # noqa: E402
from sps_workers.flink.jars import ensure_connector  # noqa: E402
from sps_workers.flink.loopback import use_in_gateway  # noqa: E402
from sps_workers.flink.options import FlinkOptions  # noqa: E402
from sps_workers.runtime import mark_ready  # noqa: E402
from sps_workers.settings import WorkerSettings, config_error, load_config  # noqa: E402

TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]+$")
TERMINAL = {"FINISHED", "FAILED", "CANCELED", "SUSPENDED"}
COMMIT_WAIT_S = 11.0  # > the Kafka source's 10 s idle poll (see Driver._await_commits)


# The secret values of this run's client properties: never printed (see redact).
_SECRETS: list[str] = []
# flink-sql-connector-kafka relocates the Kafka clients under this package: class names given in
# client properties (the JAAS line's login module) must name the relocated classes.
SHADED_KAFKA = "org.apache.flink.kafka.shaded."


def log(msg: str) -> None:
    print(f"[flink {time.strftime('%H:%M:%S')}] {redact(msg)}", flush=True)


def redact(text: str) -> str:
    """``text`` with every secret value of this run's client properties replaced by [redacted]."""
    return redact_secrets(text, _SECRETS)


def flink_client_properties(client: KafkaClient | None) -> dict[str, str]:
    """The Java client properties of ``client``, resolved, for the connector's relocated Kafka
    clients: Kafka class names (``sasl.jaas.config``'s login module, ``*.class`` values) under
    :data:`SHADED_KAFKA`."""
    if not client:
        return {}
    out = {}
    for k, v in client.java().items():
        if k == "sasl.jaas.config" or k.endswith((".class", ".classes")):
            v = re.sub(r"(?<![\w.])org\.apache\.kafka\.", SHADED_KAFKA + "org.apache.kafka.", v)
        out[k] = v
    return out


def load_settings(raw: str) -> tuple[WorkerSettings, FlinkOptions]:
    """WorkerSettings (+ its engine_options) from JSON or @file; ValueError (or OSError for a
    missing file) naming the field."""
    settings, opts = load_config(raw, FlinkOptions)
    for field in ("input_topic", "output_topic", "dead_letter_topic"):
        if not TOPIC_RE.match(getattr(settings, field)):
            raise ValueError(f"{field}: not a plain Kafka topic name: {getattr(settings, field)!r}")
    return settings, opts


def make_env(settings: WorkerSettings, opts: FlinkOptions, jars: list[Path] = (), name: str | None = None,
             checkpointing: bool = True, rest_port: int | None = None):
    """StreamExecutionEnvironment + StreamTableEnvironment: local mini-cluster or the remote
    cluster of engine_options.jobmanager, this environment's interpreter for the Python workers."""
    use_in_gateway()  # before the first JVM call: Beam's gRPC servers for the Python workers on loopback
    # PyFlink imported only now, after use_in_gateway() put the loopback jar on the gateway's class path.
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    # Without this PyFlink runs the Python functions of a local job inside this client process
    # ("loopback" mode: one interpreter, no real parallelism); 'process' = one worker per subtask.
    os.environ["_python_worker_execution_mode"] = "process"
    src_p, _, _ = opts.parallelisms(settings.parallelism)
    conf = Configuration()
    kv = {
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "python.fn-execution.bundle.size": str(opts.bundle_size),
        "python.fn-execution.bundle.time": str(opts.bundle_time_ms),
        "execution.buffer-timeout.interval": f"{opts.buffer_timeout_ms} ms",
        "parallelism.default": str(src_p),
        "pipeline.name": name or f"crayfish-{settings.worker_id}",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "3",
        "restart-strategy.fixed-delay.delay": "1 s",
        # the mini-cluster's JobManager, TaskManager, REST and blob server on loopback
        "rest.bind-address": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.address": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
    }
    if checkpointing:
        kv["execution.checkpointing.interval"] = f"{opts.checkpoint_interval_ms} ms"
        kv["execution.checkpointing.mode"] = "AT_LEAST_ONCE"
    if rest_port:  # the local mini-cluster's REST endpoint (job and task status)
        kv["rest.port"] = kv["rest.bind-port"] = str(rest_port)
    if opts.operator_parallelism is not None:
        kv["pipeline.operator-chaining.enabled"] = "false"
    if opts.jobmanager:
        host, port = opts.host_port
        kv.update({"execution.target": "remote", "rest.address": host, "rest.port": str(port)})
        kv.pop("rest.bind-address")
    kv.update(opts.config)
    for k, v in kv.items():
        conf.set_string(k, v)
    if opts.jobmanager:
        # outside `flink run`, getExecutionEnvironment is always a local one: build Flink's
        # RemoteStreamEnvironment (job graph, jars and Python functions go to the cluster's REST API)
        from pyflink.java_gateway import get_gateway  # PyFlink: see above

        gw = get_gateway()
        host, port = opts.host_port
        j_env = gw.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment \
            .createRemoteEnvironment(host, port, conf._j_configuration, gw.new_array(gw.jvm.String, 0))
        env = StreamExecutionEnvironment(j_env)
    else:
        env = StreamExecutionEnvironment.get_execution_environment(conf)
    if jars:
        env.add_jars(*[f"file://{Path(j).resolve()}" for j in jars])
    t_env = StreamTableEnvironment.create(env)
    return env, t_env


def _q(s: str) -> str:
    """A Flink SQL string literal: single quotes doubled (any other character, newlines of a PEM
    key included, stands as it is)."""
    return "'" + s.replace("'", "''") + "'"


# Our own options that the cluster's client properties do not replace.
OWN_PROPERTIES = ("bootstrap.servers", "group.id", "client.id.prefix")


def _with(options: dict[str, str], client: dict[str, str] | None) -> str:
    """A WITH clause: ``options``, then the cluster's client properties as ``'properties.<name>'``
    (they win over our defaults, as in crayfish.kafka), every value quoted."""
    merged = dict(options)
    for k, v in (client or {}).items():
        if k not in OWN_PROPERTIES:
            merged[f"properties.{k}"] = str(v)
    return ",\n".join(f"  {_q(k)} = {_q(v)}" for k, v in merged.items())


def source_ddl(settings: WorkerSettings, parallelism: int, client: dict[str, str] | None = None) -> str:
    """The Kafka table source: raw key and value bytes plus the record's metadata (headers,
    LogAppendTime stamp, partition, offset); the DataStream KafkaSource of PyFlink only offers
    value-only deserializers, this one is the same KafkaSource with a metadata-aware schema.
    It starts at the group's committed offsets (on a pre-created input topic the runner commits
    the run's start, ``start_offsets``, for the group before the worker starts), ``earliest`` where
    the group has none. ``client``: the cluster's Java client properties, resolved -- the DDL may
    then hold secrets and is never printed."""
    options = {
        "connector": "kafka",
        "topic": settings.input_topic,
        "properties.bootstrap.servers": settings.bootstrap,
        "properties.group.id": settings.consumer_group,
        "properties.client.id.prefix": settings.worker_id,
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        "properties.max.partition.fetch.bytes": str(MAX_MESSAGE_BYTES),
        "properties.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "scan.parallelism": str(parallelism),
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""
CREATE TEMPORARY TABLE crayfish_input (
  k BYTES,
  v BYTES,
  hdrs MAP<STRING, BYTES> METADATA FROM 'headers',
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  p INT METADATA FROM 'partition',
  o BIGINT METADATA FROM 'offset'
) WITH (
{_with(options, client)}
)"""


def sink_ddl(settings: WorkerSettings, parallelism: int, linger_ms: int = 0,
             client: dict[str, str] | None = None) -> str:
    """The Kafka table sink: each row names its topic (output or dead-letter) and carries headers;
    at-least-once (the writer flushes on every checkpoint, before the source commits offsets).
    ``client``: as :func:`source_ddl`."""
    options = {
        "connector": "kafka",
        "topic": f"{settings.output_topic};{settings.dead_letter_topic}",
        "properties.bootstrap.servers": settings.bootstrap,
        "properties.linger.ms": str(linger_ms),
        "properties.acks": "all",
        "properties.enable.idempotence": "true",
        "properties.max.request.size": str(MAX_MESSAGE_BYTES),
        "sink.delivery-guarantee": "at-least-once",
        "sink.parallelism": str(parallelism),
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""
CREATE TEMPORARY TABLE crayfish_output (
  k BYTES,
  v BYTES,
  hdrs MAP<STRING, BYTES> METADATA FROM 'headers',
  tp STRING METADATA FROM 'topic'
) WITH (
{_with(options, client)}
)"""


def scoring_stream(ds, settings: WorkerSettings, opts: FlinkOptions, stats_dir: str | None = None):
    from sps_workers.flink.functions import OUTPUT_TYPE, ScoringFunction  # imports PyFlink: see make_env

    _, score_p, _ = opts.parallelisms(settings.parallelism)
    fn = ScoringFunction(settings.model_dump_json(), stats_dir=stats_dir)
    return ds.process(fn, output_type=OUTPUT_TYPE).name("crayfish-scoring").uid("crayfish-scoring") \
        .set_parallelism(score_p)


def submit(settings: WorkerSettings, opts: FlinkOptions, rest_port: int | None = None):
    """Build the Kafka -> scoring -> Kafka job and submit it; returns (JobClient, t_env)."""
    src_p, _, sink_p = opts.parallelisms(settings.parallelism)
    env, t_env = make_env(settings, opts, jars=[ensure_connector()], rest_port=rest_port)
    client = flink_client_properties(settings.kafka_client)   # resolved here; the DDL is never printed
    t_env.execute_sql(source_ddl(settings, src_p, client))
    t_env.execute_sql(sink_ddl(settings, sink_p, opts.sink_linger_ms, client))
    ds = t_env.to_data_stream(t_env.from_path("crayfish_input"))
    scored = scoring_stream(ds, settings, opts)
    result = t_env.from_data_stream(scored).execute_insert("crayfish_output")
    return result.get_job_client(), t_env


def job_status(client) -> str:
    return str(client.get_job_status().result()).rsplit(".", 1)[-1]


def rest_vertices(host_port: str, job_id: str) -> list[dict]:
    with urllib.request.urlopen(f"http://{host_port}/jobs/{job_id}", timeout=5) as resp:
        return json.loads(resp.read())["vertices"]


class Driver:
    def __init__(self, settings: WorkerSettings, opts: FlinkOptions):
        self.settings, self.opts = settings, opts
        self.stop = threading.Event()
        self.client = None

    def ready(self, rest: str) -> bool:
        """Every task RUNNING (the sources read; the Python workers of the scoring subtasks are
        started and connected; each builds its EngineInstance when its first record arrives)."""
        if job_status(self.client) != "RUNNING":
            return False
        try:
            vertices = rest_vertices(rest, str(self.client.get_job_id()))
        except OSError:
            return False
        return bool(vertices) and all(v["status"] == "RUNNING" for v in vertices)

    def run(self) -> int:
        s = self.settings
        rest_port = None if self.opts.jobmanager else free_port()
        rest = self.opts.jobmanager or f"127.0.0.1:{rest_port}"
        savepoints = tempfile.mkdtemp(prefix="crayfish-flink-savepoints-")
        try:
            t0 = time.monotonic()
            self.client, _ = submit(s, self.opts, rest_port)
            job_id = str(self.client.get_job_id())
            where = self.opts.jobmanager or "a local mini-cluster"
            log(f"job {job_id} submitted to {where} in {time.monotonic() - t0:.1f}s by driver pid {os.getpid()} "
                f"(parallelism source/scoring/sink = {list(self.opts.parallelisms(s.parallelism))})")
            is_ready = False
            while not self.stop.is_set():
                status = job_status(self.client)
                if status in TERMINAL:
                    return self._ended(status)
                if not is_ready and self.ready(rest):
                    is_ready = True
                    graph = [{"name": v["name"], "parallelism": v["parallelism"]} for v in rest_vertices(rest, job_id)]
                    log(f"job {job_id} running, every task up ({time.monotonic() - t0:.1f}s)")
                    log("job graph " + json.dumps({"job_id": job_id, "rest": rest, "vertices": graph}))
                    mark_ready(s)
                self.stop.wait(0.1 if not is_ready else 0.5)
            return self._stop(savepoints)
        finally:
            shutil.rmtree(savepoints, ignore_errors=True)

    def _ended(self, status: str) -> int:
        try:
            self.client.get_job_execution_result().result()
        except Exception as exc:  # noqa: BLE001 - reported, then the worker exits non-zero
            log(f"job ended {status}: {str(exc)[-3000:]}")
            return 1
        log(f"job ended {status}")
        return 0 if status == "FINISHED" else 1

    def _await_commits(self) -> None:
        """Wait (at most COMMIT_WAIT_S) until the group's committed offsets reach the input topic's
        end. The source commits on every completed checkpoint, but its fetcher runs the commit only
        between two polls of its consumer, and an idle poll lasts 10 s (KafkaPartitionSplitReader's
        fixed timeout); the commit of the final savepoint is dropped when the reader closes first.
        So on an idle, caught-up pipeline the commit of the last checkpoint is awaited before the
        job is stopped. If records are still coming, the stop goes ahead after the wait: what the
        final savepoint covered is then re-read by the next run of this group (at-least-once)."""
        s = self.settings
        t0 = time.monotonic()
        while time.monotonic() - t0 < COMMIT_WAIT_S:
            try:
                lag = consumer_lag(s.bootstrap, s.consumer_group, s.input_topic, timeout_s=2,
                                   client=s.kafka_client)
            except Exception as exc:  # noqa: BLE001 - the broker may be gone already
                log(f"committed offsets unknown ({exc}); stopping")
                return
            if lag == 0:
                log(f"input offsets committed ({time.monotonic() - t0:.1f}s)")
                return
            time.sleep(0.25)
        log(f"committed-offset lag still {lag} after {COMMIT_WAIT_S:.0f}s; stopping")

    def _stop(self, savepoints: str) -> int:
        """Stop with a savepoint: sources stop, every operator finishes (Python functions close, the
        sink flushes). Cancel if that stalls."""
        self._await_commits()
        t0 = time.monotonic()
        from pyflink.java_gateway import get_gateway  # PyFlink: see make_env

        fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        fut = self.client._j_job_client.stopWithSavepoint(False, f"file://{savepoints}", fmt)
        done = threading.Event()
        outcome: dict = {}

        def wait():
            try:
                outcome["path"] = fut.get()
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = str(exc)[-500:]
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        if done.wait(self.opts.stop_timeout_s) and "path" in outcome:
            log(f"stopped with savepoint in {time.monotonic() - t0:.1f}s")
        else:
            log(f"stop-with-savepoint did not complete ({outcome.get('error', 'timeout')}); cancelling")
            try:
                self.client.cancel().result()
            except Exception as exc:  # noqa: BLE001
                log(f"cancel: {str(exc)[-300:]}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if job_status(self.client) in TERMINAL:
                    break
            except Exception:  # noqa: BLE001 - the mini-cluster is gone already
                break
            time.sleep(0.1)
        return 0


def _die_with_parent() -> None:
    """SIGTERM this driver when the supervisor (sps_workers.flink.__main__) dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sps_workers.flink.job", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="WorkerSettings as JSON, or @path to a JSON file")
    a = p.parse_args(argv)
    try:
        settings, opts = load_settings(a.config)
        _SECRETS[:] = settings.kafka_client.secret_values()   # KafkaClientError is a ValueError
    except (OSError, ValueError) as exc:
        print(f"flink worker: bad config: {config_error(exc)}", file=sys.stderr)
        return 2
    _die_with_parent()
    protocompat.install()
    if "FLINK_LOG_DIR" not in os.environ:  # the JVM's log: next to the runner's files, one per driver
        base = Path(settings.ready_file).parent if settings.ready_file else cache_dir("flink", "log")
        os.environ["FLINK_LOG_DIR"] = str(base / f"flink-{settings.worker_id}-{os.getpid()}")
        log(f"Flink log: {os.environ['FLINK_LOG_DIR']}")
    driver = Driver(settings, opts)
    signal.signal(signal.SIGTERM, lambda *_: driver.stop.set())
    signal.signal(signal.SIGINT, lambda *_: driver.stop.set())
    try:
        return driver.run()
    except Exception:  # noqa: BLE001 - printed without the secrets (a Flink error may quote table options)
        log(f"driver failed:\n{traceback.format_exc()}")
        return 1
    finally:
        _end_children()


def _end_children(timeout_s: float = 5.0) -> None:
    """Shut the gateway JVM (the mini-cluster) down and reap it; the Python workers it started end
    with it. Whatever does not end in time is killed (the supervisor also kills the session)."""
    procs = psutil.Process().children(recursive=True)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=2)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # py4j/JVM threads must not keep the driver alive
