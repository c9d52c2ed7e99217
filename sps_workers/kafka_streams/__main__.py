"""Kafka Streams scoring worker (Java): ``python -m sps_workers.kafka_streams --config <json | @file>``.

This Python module only launches Java. It validates the WorkerSettings document and its
engine_options (:class:`~sps_workers.kafka_streams.options.KafkaStreamsOptions`) like every engine
does, builds the Java worker with Maven when its sources changed (``build.py``: cached in
``.cache/kafka-streams/<hash>/``), then ``os.execvp``\\ s ``java -jar crayfish-kafka-streams.jar
--config <json>`` so the runner's SIGTERM reaches the JVM, whose shutdown hook closes Kafka
Streams cleanly (producer flushed, offsets committed), then the scorers and the tracer (spans
flushed), and exits 0.

How the pipeline maps to Kafka Streams (``src/main/java/crayfish/streams``)
--------------------------------------------------------------------------------
source → scoring → sink, one Processor API topology::

    "input"  source      input_topic, byte[] key/value (the DataBatch bytes), LogAppendTime stamp
       │
    "score"  processor   Worker.ScoringProcessor → Operator (the Java port of
       │                 sps_workers/scoring_op.py): decode DataBatch → validate (model, float32,
       │                 [b, *input_shape]) → score → encode ScoredBatch with ScoringFacts
       │                 (engine "kafka-streams", worker_id "<worker_id>-<thread>", the same stamps
       │                 as the Python operator). Bad records become DeadLetter messages with the
       │                 Python operator's reasons and detail strings (decode_error, bad_shape,
       │                 bad_dtype, unknown_model, scoring_error); the job keeps running.
       ├──▶ "output"        sink → output_topic (headers: the trace context, if the batch is traced)
       └──▶ "dead-letters"  sink → dead_letter_topic

- Model: what the model takes and returns (tensor names, per-item shapes, float32) is read at start
  from ``<models_dir>/<model>/manifest.json``, which ``serving.models`` writes when it builds the
  model (ModelSpec.java): any model of the Python registry works here unchanged.
- Scoring: embedded ``onnxruntime`` (ONNX Runtime for Java loads the same
  ``<models_dir>/<model>/<model>.onnx`` as the Python backend; backend_options
  ``intra_op_threads``/``inter_op_threads`` (default 1/1, as the paper), ``graph_optimization``,
  ``device`` cpu), the calibration backends ``noop`` and ``sleep`` (``delay_ms``), or external
  ``scoring``: the crayfish.v1.Scoring gRPC service through a blocking gRPC-Java stub with the
  ``timeout_s`` deadline and ``retries`` with doubling ``backoff_s`` (then dead-lettered, with the
  Python client's error names); ``facts.server`` / ``server_inference_ns`` come from the answer.
  Only the protobuf codec and the blocking call mode exist here (others are rejected naming the
  field). The DL4J question of the paper is answered in README.md.
- Delivery: ``processing.guarantee=at_least_once``: Kafka Streams commits input offsets only after
  the producer has flushed the outputs of the records they cover (every ``commit_interval_ms``).
  Output records keep the input's timestamp; the output topic is LogAppendTime, so the broker
  stamps them anyway. ``input_append_ms`` is the input record's (LogAppendTime) timestamp.
- Trace context: an input carrying a sampled W3C ``traceparent`` gets the worker's hop spans
  (``process <topic>`` → ``crayfish.decode|score|encode`` and ``send <output topic>``) recorded
  with the OpenTelemetry Java SDK after the fact from the operator's stamps, and its output carries
  a ``traceparent`` with the same trace id and the send span's id. Spans go over OTLP
  (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT) or, with CRAYFISH_SPANS_DIR, to
  ``<dir>/spans/<service>-<pid>.jsonl`` in the span-file format of observability/spanlog.py.
  OTEL_TRACES_SAMPLER/_ARG, OTEL_SERVICE_NAME, OTEL_BSP_* and OTEL_SDK_DISABLED are honoured.
- Readiness: the stream threads' consumers are members of consumer group ``consumer_group``
  (= ``application.id``), so the runner waits for the group; the worker also writes
  ``ready_file`` when Kafka Streams reaches RUNNING.
- Start offsets: the group's committed offsets, ``earliest`` where it has none. On a pre-created
  shared input topic (``start_offsets`` set) the runner commits the run's start for
  ``consumer_group`` before the worker starts, so nothing older is read; ``start_offsets`` itself
  is not read by the Java worker.
- Cluster client properties (``kafka_client``: security, any other client setting): the settings
  hold only ``${env:..}`` / ``${file:..}`` references to secrets. This launcher resolves them
  (``KafkaClient.java()``: JAAS line, PEM stores) and passes the result to the JVM it execs in the
  environment variable ``CRAYFISH_KAFKA_CLIENT`` (a JSON object of strings) -- never on the command
  line (``ps`` shows it) nor in a file; ``Main`` sets them on every client of Kafka Streams
  (consumers, producer, admin), over the defaults and under ``streams_config``.

Knobs (``engine_options``: :mod:`.options`; unknown keys are rejected, by the launcher and by Java)
-------------------------------------------------------------------------------------------------
- ``commit_interval_ms`` (default 100): Kafka Streams ``commit.interval.ms``.
- ``poll_ms`` (default Kafka Streams' 100): ``poll.ms``, the longest an idle thread blocks in poll.
- ``warmup_ms`` (default 2000; 0 = off): before joining the group, each embedded instance scores
  zero batches for up to this long (at most 1000) so the JIT has compiled the path.
- ``streams_config``: any further Kafka Streams / consumer / producer properties, applied last
  (e.g. ``{"consumer.fetch.max.wait.ms": 1}``).
- ``jvm_options``: list of JVM arguments for the launcher (e.g. ``["-Xmx1g"]``).
Besides: ``parallelism`` = ``num.stream.threads``, ``max_poll_records`` = consumer
``max.poll.records``; the producer has ``linger.ms=0``, acks=all, idempotence, 64 MiB messages.

Scaling out
-----------
Kafka Streams has no cluster of its own: every JVM started with the same ``consumer_group``
(``application.id``) joins the same group, and Kafka assigns the input partitions (tasks) over
all stream threads of all JVMs, on one host or many. ``parallelism`` is the thread count of one
JVM; run this module on more hosts with the same settings to add instances (up to one task per
input partition); each thread has its own ONNX Runtime session or gRPC channel. Give the
instances distinct ``worker_id`` prefixes so ScoringFacts tells the JVMs apart.

Build by hand: ``python -m sps_workers.kafka_streams --build`` (prints the jar's path); Java unit
tests: ``mvn -f sps_workers/kafka_streams/pom.xml test``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from crayfish.host.paths import models_dir
from crayfish.kafka_client import KafkaClientError
from sps_workers.kafka_streams.build import BuildError, ensure_built
from sps_workers.kafka_streams.options import KafkaStreamsOptions
from sps_workers.settings import WorkerSettings, config_error, load_config

DEFAULT_JVM_OPTIONS = ["-XX:+ExitOnOutOfMemoryError"]
# The JVM's environment variable holding the resolved Java client properties (Settings.java reads it).
KAFKA_CLIENT_ENV = "CRAYFISH_KAFKA_CLIENT"


def java_executable() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        sys.exit("kafka-streams: no java on PATH (and JAVA_HOME unset): install a JDK 17+")
    return found


def java_command(settings: WorkerSettings, options: KafkaStreamsOptions, jar: Path) -> list[str]:
    doc = settings.model_dump(mode="json")
    if not doc.get("models_dir"):
        doc["models_dir"] = str(models_dir())   # where the Java worker reads <model>/manifest.json
    java = java_executable()
    # ONNX Runtime's native library is extracted to java.io.tmpdir: the service's own TMPDIR.
    tmp = f"-Djava.io.tmpdir={tempfile.gettempdir()}"
    return [java, *DEFAULT_JVM_OPTIONS, tmp, *options.jvm_options, "-jar", str(jar), "--config", json.dumps(doc)]


def java_env(settings: WorkerSettings) -> dict[str, str]:
    """The JVM's environment: ours, plus the cluster's Java client properties, resolved (secrets
    included), in :data:`KAFKA_CLIENT_ENV`. Raises KafkaClientError / OSError naming the property
    or file (never a value)."""
    env = {k: v for k, v in os.environ.items() if k != KAFKA_CLIENT_ENV}
    if settings.kafka_client:
        env[KAFKA_CLIENT_ENV] = json.dumps(settings.kafka_client.java())
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sps_workers.kafka_streams",
                                     description="Kafka Streams scoring worker (Java).")
    parser.add_argument("--config", help="WorkerSettings as JSON, or @path to a JSON file")
    parser.add_argument("--build", action="store_true", help="build the Java worker if needed, print its jar")
    args = parser.parse_args(argv)
    settings = None
    if not args.build:
        if not args.config:
            parser.error("--config is required")
        try:
            settings, options = load_config(args.config, KafkaStreamsOptions)
        except (OSError, ValueError) as exc:
            print(f"kafka-streams worker: bad config: {config_error(exc)}", file=sys.stderr, flush=True)
            sys.exit(2)
    try:
        jar = ensure_built()
    except BuildError as exc:
        sys.exit(str(exc))
    if settings is None:
        print(jar)
        return
    cmd = java_command(settings, options, jar)
    try:
        env = java_env(settings)
    except (KafkaClientError, OSError) as exc:
        print(f"kafka-streams worker: kafka_client: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
