"""The Spark driver: builds the streaming query Kafka -> mapInArrow(score) -> Kafka and runs it
until SIGTERM. See the package docstring (sps_workers.spark) for the whole picture.

The cluster's client properties (``WorkerSettings.kafka_client``, references to secrets only) are
resolved here, on the driver, into Java names (``KafkaClient.java()``) and set as ``kafka.<name>``
options of the Kafka source and sink (Spark hands them to its consumers, producers and admin
client on the driver and the executors). Nothing prints them: a failure's traceback is printed
with the secret values replaced by ``[redacted]`` (:func:`redact`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

import pyspark
from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from crayfish.kafka import MAX_MESSAGE_BYTES
from crayfish.kafka_client import KafkaClient, KafkaClientError
from crayfish.kafka_client import redact as redact_secrets
from sps_workers.runtime import mark_ready, read_settings
from sps_workers.settings import WorkerSettings
from sps_workers.spark import scoring
from sps_workers.spark.jars import ensure_jars
from sps_workers.spark.options import SparkOptions, local_cores

log = logging.getLogger("crayfish.worker.spark")

POLL_S = 0.1

# Kafka client properties the Spark connector sets itself or rejects as kafka.* options (it names
# the source option to use instead): a cluster property of these names is not passed on.
SPARK_MANAGED = ("bootstrap.servers", "group.id", "auto.offset.reset", "enable.auto.commit", "interceptor.classes",
                 "key.deserializer", "value.deserializer", "key.serializer", "value.serializer")

_SECRETS: list[str] = []   # this run's secret values (see redact)


def kafka_options(client: KafkaClient | None) -> dict[str, str]:
    """The cluster's client properties as ``kafka.<name>`` options of the Kafka source and sink:
    Java names, resolved (secrets included: never print the result)."""
    out = {}
    for name, value in (client.java() if client else {}).items():
        if name in SPARK_MANAGED:
            log.warning("kafka client property %s is not passed to Spark's Kafka source and sink "
                        "(the connector sets it itself)", name)
            continue
        out[f"kafka.{name}"] = value
    return out


def starting_offsets(settings: WorkerSettings) -> str:
    """The source's ``startingOffsets``: ``earliest`` (a fresh topic), or, on a pre-created shared
    input topic, the run's start (``start_offsets``) as Spark's JSON, every partition named."""
    if settings.start_offsets is None:
        return "earliest"
    return json.dumps({settings.input_topic: {str(p): o for p, o in sorted(settings.start_offsets.items())}})


def redact(text: str) -> str:
    """``text`` with every secret value of this run's client properties replaced by [redacted]."""
    return redact_secrets(text, _SECRETS)


def spark_conf(settings: WorkerSettings, opts: SparkOptions, jars: list, scratch: str) -> dict[str, str]:
    conf = {
        "spark.master": opts.master,
        "spark.app.name": f"crayfish-{settings.worker_id}",
        "spark.jars": ",".join(str(j) for j in jars),
        "spark.driver.host": opts.driver_host,
        "spark.driver.bindAddress": opts.driver_host,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.warehouse.dir": os.path.join(scratch, "warehouse"),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(opts.arrow_batch_records),
        "spark.sql.streaming.stopTimeout": f"{int(opts.stop_timeout_s * 1000)}ms",
        "spark.python.worker.reuse": "true",
    }
    conf.update(opts.spark_conf())
    return conf


def start_spark(conf: dict[str, str]):
    """A SparkSession whose JVM runs in a session of its own: the runner's SIGTERM to our process
    group reaches this driver only, which then stops the query and Spark in order (the JVM still
    exits with us: it ends when its stdin pipe from this process closes)."""
    sconf = SparkConf(loadDefaults=False)
    for k, v in conf.items():
        sconf.set(k, v)
    gateway = launch_gateway(sconf, popen_kwargs={"start_new_session": True})
    sc = SparkContext(conf=sconf, gateway=gateway)
    sc.setLogLevel(os.environ.get("CRAYFISH_SPARK_LOG_LEVEL", "WARN"))
    return SparkSession(sc)


def build_query(spark, settings: WorkerSettings, opts: SparkOptions, checkpoint: str):
    client = kafka_options(settings.kafka_client)   # resolved: never printed
    src = (spark.readStream.format("kafka")
           .option("kafka.bootstrap.servers", settings.bootstrap)
           .option("subscribe", settings.input_topic)
           .option("startingOffsets", starting_offsets(settings))
           .option("includeHeaders", "true")
           .option("groupIdPrefix", settings.consumer_group)
           .option("kafka.fetch.max.wait.ms", "5")     # as crayfish.kafka.consumer_config
           .option("kafka.fetch.max.bytes", str(MAX_MESSAGE_BYTES))
           .option("kafka.max.partition.fetch.bytes", str(MAX_MESSAGE_BYTES))
           .options(**client))                         # the cluster's properties over our defaults
    if opts.max_offsets_per_trigger:
        src = src.option("maxOffsetsPerTrigger", str(opts.max_offsets_per_trigger))
    if opts.min_partitions:
        src = src.option("minPartitions", str(opts.min_partitions))
    records = src.load().selectExpr("key", "value", "headers", "unix_millis(timestamp) AS append_ms", "topic",
                                    "partition", "offset")
    assert tuple(records.columns) == scoring.IN_COLUMNS
    scored = records.mapInArrow(scoring.make_scorer(settings.model_dump_json(), opts.arrow_batch_records),
                                scoring.OUT_DDL)
    sink = (scored.writeStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.bootstrap)
            .option("kafka.linger.ms", "0")
            .option("kafka.acks", "all")
            .option("kafka.enable.idempotence", "true")
            .option("kafka.compression.type", "none")
            .option("kafka.max.request.size", str(MAX_MESSAGE_BYTES))
            .options(**client)
            .option("checkpointLocation", checkpoint)
            .queryName(f"crayfish-{settings.worker_id}")
            .trigger(processingTime=f"{opts.trigger_ms} milliseconds"))
    if opts.async_progress:
        sink = sink.option("asyncProgressTrackingEnabled", "true")
    return sink.start()


def warm_up(spark, settings: WorkerSettings, tasks: int) -> None:
    """One tiny batch job over ``tasks`` partitions: Python workers forked, EngineInstances built."""
    t0 = time.monotonic()
    pids = (spark.range(0, tasks, 1, tasks)
            .mapInArrow(scoring.make_warmup(settings.model_dump_json()), "pid LONG").collect())
    log.info("warm-up: %d python workers in %.1fs", len({r.pid for r in pids}), time.monotonic() - t0)


def first_batch_planned(query) -> bool:
    """The query runs and has planned (and run) its first micro-batch."""
    if not query.isActive:
        return False
    progress = query.lastProgress
    return progress is not None and progress.get("batchId", -1) >= 0


def run(settings: WorkerSettings, opts: SparkOptions) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    os.environ["SPARK_LOCAL_IP"] = opts.driver_host   # executors and block managers: loopback too
    os.environ["PYSPARK_PYTHON"] = sys.executable
    jars = ensure_jars(pyspark.__version__)
    scratch = tempfile.mkdtemp(prefix=f"crayfish-spark-{settings.worker_id}-")
    checkpoint = opts.checkpoint_dir or os.path.join(scratch, "checkpoint")
    spark = query = None
    try:
        t0 = time.monotonic()
        spark = start_spark(spark_conf(settings, opts, jars, scratch))
        t_spark = time.monotonic() - t0
        if opts.warmup and not stop.is_set():
            warm_up(spark, settings, local_cores(opts.master) or settings.parallelism)
        if stop.is_set():
            return
        query = build_query(spark, settings, opts, checkpoint)
        while not stop.is_set() and not first_batch_planned(query):
            if not query.isActive:
                raise RuntimeError(f"streaming query stopped: {query.exception()}")
            time.sleep(POLL_S)
        if not stop.is_set():
            mark_ready(settings)
            print(f"crayfish spark worker ready: pyspark {pyspark.__version__}, master {opts.master}, "
                  f"spark up in {t_spark:.1f}s, ready in {time.monotonic() - t0:.1f}s", flush=True)
        while not stop.is_set():
            if query.awaitTermination(0.5):
                raise RuntimeError(f"streaming query ended: {query.exception()}")
    finally:
        _shutdown(spark, query, opts)
        shutil.rmtree(scratch, ignore_errors=True)   # (a given checkpoint_dir lives elsewhere)


def _shutdown(spark, query, opts: SparkOptions) -> None:
    """Let the running micro-batch finish (its output delivered, its offsets committed to the
    checkpoint), then stop the query and Spark."""
    t0 = time.monotonic()
    if query is not None and query.isActive:
        deadline = t0 + opts.stop_timeout_s
        while time.monotonic() < deadline and query.status.get("isTriggerActive"):
            time.sleep(0.05)
        try:
            query.stop()
        except Exception as exc:  # noqa: BLE001 - a timed-out stop still ends the query
            log.warning("query.stop: %s", exc)
    if spark is not None:
        spark.stop()
    print(f"crayfish spark worker stopped in {time.monotonic() - t0:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    settings, opts = read_settings(argv, "python -m sps_workers.spark", "Spark Structured Streaming scoring worker.",
                                   SparkOptions)
    try:
        _SECRETS[:] = settings.kafka_client.secret_values()
    except (KafkaClientError, OSError) as exc:
        print(f"spark worker: bad config: kafka_client: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        run(settings, opts)
    except Exception:  # noqa: BLE001 - printed without the secrets (a query's error may quote its options)
        print(redact(f"spark worker failed:\n{traceback.format_exc()}"), file=sys.stderr, flush=True)
        sys.exit(1)
