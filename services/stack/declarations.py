"""The native stack as a list of declared services (:data:`STACK`), in start order.

Each :class:`StackService` says everything the generic supervisor loop
(:func:`services.stack.supervisor.up`) needs: its name, what it builds before anything starts, how
it starts (:class:`Launch`: command, environment, the config it writes), its ports, its health
check and what it depends on. The name is the same everywhere: compose service (compose/*.yaml),
process name (:class:`crayfish.host.procs.Service`), ``OTEL_SERVICE_NAME``, log file
``logs/<name>.log`` and config file ``config/<name>.json`` (tests/integration/services/test_compose.py checks the names
and the dependencies against the compose files).

=============  ========================  ===================================================
service        depends on (healthy)      healthy when (:mod:`services.stack.health`)
=============  ========================  ===================================================
jaeger         -                         GET /status = 200 and GET /api/services = 200
kafka          -                         its port accepts connections, metadata lists a broker
scoring        jaeger                    ``scoring.ready`` written, grpc.health.v1 SERVING
kafka-worker   jaeger, kafka, scoring    its group is Stable, every input partition assigned
collector      jaeger, kafka,            it wrote ``collector.ready``
               kafka-worker
=============  ========================  ===================================================

Adding a service:

1. its ports: fields ``<name>`` / ``<name>_<what>`` of :class:`services.stack.settings.PortSettings`
   (and compose/native/stack.yaml); endpoints others need: :func:`services.stack.state.new_state`;
2. a health check ``check_<name>(state) -> str`` in :mod:`services.stack.health`;
3. a ``_<name>_launch(ctx) -> Launch`` here that writes its config (``ctx.write_config``) and
   returns its command, then a :class:`StackService` in :data:`STACK` after what it depends on;
4. the same service (same name, same ``depends_on``) in compose/core.yaml or a compose layer, and
   a row in docs/stack.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crayfish.host.envs import python_for
from crayfish.host.paths import models_dir
from crayfish.kafka import RunTopics, create_topics
from observability.jaeger.build import CONFIG as JAEGER_CONFIG
from observability.jaeger.build import binary as jaeger_binary
from observability.jaeger.build import ensure_jaeger, is_built
from services.broker import launcher
from services.collector.collector import CollectorSettings
from services.stack import health
from services.stack.settings import HOST, StackSettings
from serving.external import backend_env
from serving.models import build_model
from sps_workers.settings import ExternalSettings, WorkerSettings

Log = Callable[[str], None]


@dataclass(frozen=True)
class Launch:
    """How the loop starts one service: ``program *args`` in a session of its own, from the
    repository root, with ``env`` on top of ours (``OTEL_SERVICE_NAME`` = the service's name is
    always set), stdout and stderr into ``logs/<stdout>``."""

    program: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    shown_cmd: list[str] | None = None   # the command as stack.json records it (default: all of it)
    stdout: str | None = None            # file name in logs/ (default: "<name>.log")
    main_log: str | None = None          # the log it writes itself, when not stdout (Kafka's log4j log)


@dataclass(frozen=True)
class StackContext:
    """What a service's ``launch`` gets: the settings and the state being written (ports, endpoints,
    folders; see :mod:`services.stack.state`)."""

    settings: StackSettings
    state: dict

    @property
    def endpoints(self) -> dict:
        return self.state["endpoints"]

    @property
    def ports(self) -> dict[str, int]:
        return self.state["ports"]

    @property
    def logs_dir(self) -> Path:
        return Path(self.state["logs_dir"])

    def write_config(self, name: str, text: str) -> Path:
        """Write ``config/<name>.json``; returns its path."""
        path = self.settings.dir / "config" / f"{name}.json"
        path.write_text(text)
        return path

    def otel_env(self) -> dict[str, str]:
        """Standard OTEL_* settings of our services: traces over OTLP/gRPC to the stack's Jaeger."""
        otlp = self.endpoints["otlp_grpc"]
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                "OTEL_BSP_SCHEDULE_DELAY": str(self.settings.span_export_delay_ms),
                "CRAYFISH_SPANS_DIR": ""}   # spans go to Jaeger, not to span files


def _nothing_to_build(s: StackSettings, log: Log) -> None:
    pass


@dataclass(frozen=True)
class StackService:
    """One service of the native stack (see the module docstring)."""

    name: str                        # compose service = process = OTEL_SERVICE_NAME = log/config file
    code: str                        # the repository folder of its code (or of its launcher/build)
    ports: tuple[str, ...]           # its fields of PortSettings (ports.* in compose/native/stack.yaml)
    depends_on: tuple[str, ...]      # started only once these are healthy (compose's depends_on)
    launch: Callable[[StackContext], Launch]   # writes its config, returns how to start it
    health: Callable[[dict], str]    # state -> "" when healthy, else the problem (up and ps)
    ready_note: Callable[[dict], str]   # state -> what `up` prints once it is healthy
    build: Callable[[StackSettings, Log], None] = _nothing_to_build   # before anything starts


# --- jaeger: the trace backend every other service exports to ---------------------------------------

def _jaeger_build(s: StackSettings, log: Log) -> None:
    if not is_built():
        log("building Jaeger from the Go module proxy (first time only; long on a small machine) ...")
    ensure_jaeger(log=log)


def _jaeger_launch(ctx: StackContext) -> Launch:
    # observability/jaeger/config.yaml reads its listeners from these
    listen = {"CRAYFISH_JAEGER_OTLP_GRPC": "jaeger_otlp_grpc", "CRAYFISH_JAEGER_OTLP_HTTP": "jaeger_otlp_http",
              "CRAYFISH_JAEGER_QUERY_HTTP": "jaeger_query", "CRAYFISH_JAEGER_QUERY_GRPC": "jaeger_query_grpc",
              "CRAYFISH_JAEGER_HEALTH": "jaeger_health"}
    env = {var: f"{HOST}:{ctx.ports[key]}" for var, key in listen.items()}
    return Launch(str(jaeger_binary()), ["--config", f"file:{JAEGER_CONFIG}"], env)


# --- kafka: KRaft, a fresh log dir each time (removed by down), run as services/broker runs it ------

def _kafka_build(s: StackSettings, log: Log) -> None:
    launcher.ensure_jars()


def _kafka_launch(ctx: StackContext) -> Launch:
    data = Path(ctx.state["kafka_data_dir"])
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    log4j_log = ctx.logs_dir / "kafka.log"
    log4j_log.write_text("")
    cmd = launcher.kafka_command(data, ctx.ports["kafka"], ctx.ports["kafka_controller"],
                                 ctx.settings.kafka_heap, log4j_log)
    # its log is log4j's kafka.log; kafka.out has the JVM's own stdout/stderr
    return Launch(cmd[0], cmd[1:], {"OTEL_EXPORTER_OTLP_ENDPOINT": ctx.endpoints["otlp_grpc"]},
                  shown_cmd=[cmd[0], "...", *cmd[-2:]], stdout="kafka.out", main_log="kafka.log")


# --- scoring: our Scoring gRPC server -----------------------------------------------------------------

def _scoring_build(s: StackSettings, log: Log) -> None:
    build_model(s.model, models_dir())


def _scoring_launch(ctx: StackContext) -> Launch:
    s = ctx.settings
    ready = s.dir / "scoring.ready"
    ready.unlink(missing_ok=True)
    cfg = {"host": HOST, "port": ctx.ports["scoring"], "models": [s.model], "backend": s.backend,
           "instances": s.scoring_instances, "models_dir": str(models_dir()),
           "ready_file": str(ready), "service_name": SCORING.name}
    path = ctx.write_config(SCORING.name, json.dumps(cfg, indent=2))
    return Launch(python_for(backend_env(s.backend)), ["-m", "serving.scoring", "--config", f"@{path}"],
                  ctx.otel_env())


# --- kafka-worker: the baseline worker on the stack's topics, scoring through `scoring` -------------

def _worker_launch(ctx: StackContext) -> Launch:
    s, t = ctx.settings, ctx.settings.topics
    bootstrap = ctx.endpoints["kafka_bootstrap"]
    # the stack's topics first, as compose's kafka-worker does (compose/topics.py)
    create_topics(bootstrap, RunTopics(t.input, t.output, t.dead_letter, t.probe), partitions=t.partitions)
    ws = WorkerSettings(bootstrap=bootstrap, input_topic=t.input, output_topic=t.output,
                        dead_letter_topic=t.dead_letter, consumer_group=s.consumer_group, codec=s.codec,
                        model=s.model, models_dir=str(models_dir()), parallelism=s.worker_parallelism,
                        worker_id="kafka",
                        external=ExternalSettings(client="scoring", target=ctx.endpoints["scoring"]))
    path = ctx.write_config(KAFKA_WORKER.name, ws.model_dump_json(indent=2))
    return Launch(sys.executable, ["-m", "sps_workers.kafka", "--config", f"@{path}"], ctx.otel_env())


# --- collector: services/collector on the output and dead-letter topics -----------------------------

def _collector_launch(ctx: StackContext) -> Launch:
    s, t = ctx.settings, ctx.settings.topics
    out = Path(ctx.state["collector_dir"])
    out.mkdir(parents=True, exist_ok=True)
    Path(ctx.state["collector_ready_file"]).unlink(missing_ok=True)
    cs = CollectorSettings(bootstrap=ctx.endpoints["kafka_bootstrap"], output_topic=t.output,
                           dead_letter_topic=t.dead_letter, input_topic=t.input, worker_group=s.consumer_group,
                           codec=s.codec, expect_file=str(out / "sent.parquet"), check_sample=0.0)
    path = ctx.write_config(COLLECTOR.name, cs.model_dump_json(indent=2))
    return Launch(sys.executable, ["-m", "services.collector", "--config", f"@{path}", "--out", str(out)],
                  ctx.otel_env())


JAEGER = StackService(
    "jaeger", "observability/jaeger",
    ports=("jaeger_otlp_grpc", "jaeger_otlp_http", "jaeger_query", "jaeger_query_grpc", "jaeger_health"),
    depends_on=(), build=_jaeger_build, launch=_jaeger_launch, health=health.check_jaeger,
    ready_note=lambda st: f"{st['endpoints']['jaeger_query']}  (OTLP {st['endpoints']['otlp_grpc']})")

KAFKA = StackService(
    "kafka", "services/broker", ports=("kafka", "kafka_controller"),
    depends_on=(), build=_kafka_build, launch=_kafka_launch, health=health.check_kafka,
    ready_note=lambda st: st["endpoints"]["kafka_bootstrap"])

SCORING = StackService(
    "scoring", "serving/scoring", ports=("scoring",),
    depends_on=("jaeger",), build=_scoring_build, launch=_scoring_launch, health=health.check_scoring,
    ready_note=lambda st: f"{st['endpoints']['scoring']}  (grpc.health.v1 SERVING)")

KAFKA_WORKER = StackService(
    "kafka-worker", "sps_workers/kafka", ports=(),
    depends_on=("jaeger", "kafka", "scoring"), launch=_worker_launch, health=health.check_worker,
    ready_note=lambda st: (f"group {st['consumer_group']}: {st['topics']['partitions']} partition(s) "
                           f"of {st['topics']['input']} assigned"))

COLLECTOR = StackService(
    "collector", "services/collector", ports=(),
    depends_on=("jaeger", "kafka", "kafka-worker"), launch=_collector_launch, health=health.check_collector,
    ready_note=lambda st: (f"reading {st['topics']['output']}, {st['topics']['dead_letter']} "
                           f"-> {st['collector_dir']}"))

STACK: list[StackService] = [JAEGER, KAFKA, SCORING, KAFKA_WORKER, COLLECTOR]   # start order; stopped in reverse
BY_NAME: dict[str, StackService] = {svc.name: svc for svc in STACK}
