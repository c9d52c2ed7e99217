"""Go scoring worker (native): ``python -m sps_workers.go --config <json | @file>``.

This Python module only launches Go. It validates the WorkerSettings document (``--config``, or
the file named by ``$CRAYFISH_WORKER_SETTINGS``) and its engine_options
(:class:`~sps_workers.go.options.GoOptions`) like every engine does, refuses what the Go worker
does not implement in one line naming the field (exit 2), builds the binary when its sources
changed (``build.py``: cached in ``.cache/go/<hash>/``), then ``os.execv``\\ s it with the same
settings, so the runner's SIGTERM reaches the Go process, which stops consuming, flushes its
outputs, commits, leaves the group, closes the scorers and the tracer (spans flushed) and exits 0.

How the pipeline maps to Kafka (``sps_workers/go/*.go``)
----------------------------------------------------------
``parallelism`` instances in one process, each a goroutine with its own franz-go client, all
members of consumer group ``consumer_group``: Kafka assigns the input partitions over them.
Per instance: poll (up to ``max_poll_records``) → for each record the operator (``operator.go``,
the Go port of sps_workers/scoring_op.py): decode DataBatch → validate (model, ``check_feeds``) →
score → encode ScoredBatch with ScoringFacts (engine "go", worker_id "<worker_id>-<i>", the same
stamps as the Python operator), or a DeadLetter with the Python operator's reasons and detail
strings (decode_error, bad_shape, bad_dtype, unknown_model, scoring_error) → produce to the output
or dead-letter topic (same key; the output carries the trace context of a traced batch).

- Model: the tensors a model takes and returns (names, dtypes, per-item shapes) are read at start
  from ``<models_dir>/<model>/manifest.json`` (model.go): any model of the Python registry, or one
  imported from a file, works unchanged.
- Scoring: embedded ``onnxruntime`` through ONNX Runtime's C API (github.com/yalue/onnxruntime_go),
  loading the ``libonnxruntime.so`` of the onnxruntime wheel of this venv (its path goes in
  ``CRAYFISH_ORT_LIB``): the same ``<model>.onnx`` as the Python backend, backend_options
  ``intra_op_threads``/``inter_op_threads`` (default 1/1), ``graph_optimization``, ``device`` cpu;
  the calibration backends ``noop`` and ``sleep`` (``delay_ms``, ``spin_us``); or external
  ``scoring``: the crayfish.v1.Scoring gRPC service (grpc-go, stubs generated from protos/ at
  build time) with the ``timeout_s`` deadline and ``retries`` with doubling ``backoff_s``, then a
  dead letter with the Python client's error names. Codec ``protobuf`` and call mode ``blocking``
  only.
- Delivery: at-least-once. The input offsets of a poll are marked only after every output of that
  poll is acknowledged (acks=all, idempotent producer), and only marked offsets are committed:
  every ``commit_interval_ms``, when partitions are revoked, and on stop. ``input_append_ms`` is
  the input record's (LogAppendTime) broker timestamp.
- Trace context: an input carrying a sampled W3C ``traceparent`` gets the worker's hop spans
  (``process <topic>`` → ``crayfish.decode|score|encode`` and ``send <output topic>``), recorded
  with the OpenTelemetry Go SDK from the operator's stamps; its output carries a ``traceparent``
  with the same trace id and the send span's id. Spans go over OTLP/gRPC
  (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT) or, with CRAYFISH_SPANS_DIR, to
  ``<dir>/spans/<service>-<pid>.jsonl`` in the span-file format of observability/spanlog.py.
- Readiness: the instances are members of ``consumer_group`` (the runner waits for the group); the
  worker also writes ``ready_file`` when the first instance gets partitions.
- Start: the group's committed offsets, else the topic's start. On a shared (pre-created) input
  topic the runner commits this run's ``start_offsets`` for ``consumer_group`` before it starts the
  worker, so older records are never scored; ``start_offsets`` itself is not read.
- Cluster client properties (``kafka_client``, crayfish/kafka_client.py): the Go worker reads the
  properties and the ``properties_file`` (Java .properties syntax) itself and resolves the
  ``${env:NAME}`` / ``${file:PATH}`` references in its own process (kafkaclient.go), as the Python
  side does. ``security.protocol`` SSL / SASL_SSL: TLS trusting ``ssl.ca.location`` (system roots
  without it), mutual TLS with ``ssl.certificate.location`` + ``ssl.key.location`` (an encrypted key,
  PKCS#8 PBES2 or legacy PEM, is decrypted with ``ssl.key.password``),
  the broker's host name verified unless ``ssl.endpoint.identification.algorithm=none`` (the chain
  always is); SASL_PLAINTEXT / SASL_SSL: ``sasl.mechanisms`` PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
  with ``sasl.username`` / ``sasl.password``. Anything else in those properties is a config error
  naming the property (exit 2). Other librdkafka properties have no generic franz-go equivalent:
  they are ignored and named in one warning line at start.

Knobs (``engine_options``: :mod:`.options`; unknown keys are rejected, here and by Go)
----------------------------------------------------------------------------------------
- ``commit_interval_ms`` (default 100; 0 = commit after every poll).
- ``fetch_max_wait_ms`` (default 10, the least franz-go takes): how long the broker may hold a fetch.
- ``warmup_rounds`` (default 10; 0 = off): zero batches each embedded instance scores at start.

Scaling out
-----------
Every process started with the same ``consumer_group`` joins the same group: run this module on
more hosts with the same settings (distinct ``worker_id`` prefixes) to add instances, up to one per
input partition.

Build by hand: ``python -m sps_workers.go --build`` (prints the binary's path); Go unit tests:
``python -m sps_workers.go --test``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from crayfish.host.paths import models_dir
from crayfish.kafka_client import KafkaClientError
from sps_workers.go.build import BuildError, ensure_built, go_test
from sps_workers.go.options import GoOptions
from sps_workers.settings import WorkerSettings, config_error, load_config

SETTINGS_ENV = "CRAYFISH_WORKER_SETTINGS"   # the path of a WorkerSettings file, instead of --config
ORT_LIB_ENV = "CRAYFISH_ORT_LIB"            # read by onnx.go
# What the Go worker implements; anything else is refused here, before a build.
BACKENDS = ("onnxruntime", "noop", "sleep")
CODECS = ("protobuf",)
CLIENTS = ("scoring",)
CALL_MODES = ("blocking",)


class Unsupported(ValueError):
    pass


def check_supported(settings: WorkerSettings) -> None:
    """One line naming the first field the Go worker does not implement."""
    if settings.codec not in CODECS:
        raise Unsupported(f"codec: {settings.codec!r} is not supported by the go engine (it speaks the protobuf "
                          f"codec only)")
    ext = settings.external
    if ext is None:
        if settings.backend not in BACKENDS:
            raise Unsupported(f"backend: {settings.backend!r} is not available in the go engine; known: "
                              f"{', '.join(BACKENDS)}")
        return
    if ext.client not in CLIENTS:
        raise Unsupported(f"external.client: {ext.client!r} is not supported by the go engine; it calls the "
                          f"crayfish.v1.Scoring gRPC service ('scoring') only")
    if ext.call_mode not in CALL_MODES:
        raise Unsupported(f"external.call_mode: {ext.call_mode!r} is not supported by the go engine; each "
                          f"instance scores one record at a time ('blocking')")


def check_client(settings: WorkerSettings) -> None:
    """The cluster's client properties resolve and can work (the Go worker checks the same itself)."""
    try:
        settings.kafka_client.check()
    except KafkaClientError as exc:
        raise Unsupported(f"kafka_client: {exc}") from None


def ort_library() -> str:
    """The ONNX Runtime shared library that the onnxruntime wheel of this environment ships."""
    # Inside: onnxruntime is only needed to find the library (the Go process loads it itself).
    import onnxruntime

    capi = Path(os.path.dirname(onnxruntime.__file__)) / "capi"
    found = sorted(capi.glob("libonnxruntime.so*"), key=lambda p: len(p.name))
    if not found:
        sys.exit(f"go worker: no libonnxruntime.so* in {capi}")
    return str(found[-1])


def go_command(settings: WorkerSettings, binary: Path) -> list[str]:
    doc = settings.model_dump(mode="json")
    if not doc.get("models_dir"):
        doc["models_dir"] = str(models_dir())   # where the Go worker reads <model>/manifest.json
    return [str(binary), "--config", json.dumps(doc)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sps_workers.go", description="Go scoring worker (native).")
    parser.add_argument("--config", help=f"WorkerSettings as JSON, or @path to a JSON file (default: "
                                         f"@${SETTINGS_ENV})")
    parser.add_argument("--build", action="store_true", help="build the Go worker if needed, print its binary")
    parser.add_argument("--test", action="store_true", help="run the Go unit tests (go test)")
    args = parser.parse_args(argv)
    if args.test:
        with tempfile.TemporaryDirectory(prefix="crayfish-go-test-") as tmp:
            rc = go_test(Path(tmp) / "go-test.log", Path(tmp) / "work")
            print((Path(tmp) / "go-test.log").read_text())
        sys.exit(rc)
    config = args.config or (f"@{os.environ[SETTINGS_ENV]}" if os.environ.get(SETTINGS_ENV) else None)
    settings = None
    if not args.build:
        if not config:
            parser.error(f"--config (or ${SETTINGS_ENV}) is required")
        try:
            settings, _ = load_config(config, GoOptions)
            check_supported(settings)
            check_client(settings)
        except (OSError, ValueError) as exc:
            print(f"go worker: bad config: {config_error(exc)}", file=sys.stderr, flush=True)
            sys.exit(2)
    try:
        binary = ensure_built()
    except BuildError as exc:
        sys.exit(str(exc))
    if settings is None:
        print(binary)
        return
    cmd = go_command(settings, binary)
    env = dict(os.environ)
    if settings.external is None and settings.backend == "onnxruntime":
        env[ORT_LIB_ENV] = ort_library()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
