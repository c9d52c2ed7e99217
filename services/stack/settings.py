"""Settings of the native stack (``make up``): one pydantic model read from compose/native/stack.yaml.

Unknown keys are rejected (a typo fails loudly). Every listener binds 127.0.0.1; that is not a
setting. A port of 0 means "pick a free port at ``up``" (the chosen port is written to the state
file and printed); a fixed port that is already taken stops ``up`` with the name of its setting.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crayfish.host.paths import REPO_ROOT, cache_dir

DEFAULT_CONFIG = REPO_ROOT / "compose" / "native" / "stack.yaml"
HOST = "127.0.0.1"  # every service of the stack listens here only


class StackConfigError(ValueError):
    pass


class PortSettings(BaseModel):
    """TCP ports of the stack's listeners, all on 127.0.0.1. 0 = a free port picked at ``up``."""

    model_config = ConfigDict(extra="forbid")

    kafka: int = Field(
        0, ge=0, le=65535,
        description="Kafka's client listener: the bootstrap address is 127.0.0.1:<kafka> "
                    "(compose publishes 9092).")
    kafka_controller: int = Field(
        0, ge=0, le=65535, description="Kafka's KRaft controller listener (internal to the broker).")
    scoring: int = Field(
        0, ge=0, le=65535, description="Our Scoring gRPC server (crayfish.v1.Scoring + grpc.health.v1; compose: 50051).")
    jaeger_otlp_grpc: int = Field(
        0, ge=0, le=65535,
        description="Jaeger's OTLP/gRPC receiver: OTEL_EXPORTER_OTLP_ENDPOINT of the stack's services "
                    "(compose: 4317).")
    jaeger_otlp_http: int = Field(
        0, ge=0, le=65535, description="Jaeger's OTLP/HTTP receiver (compose: 4318).")
    jaeger_query: int = Field(
        0, ge=0, le=65535,
        description="Jaeger's HTTP query API (/api/services, /api/traces; compose: 16686).")
    jaeger_query_grpc: int = Field(
        0, ge=0, le=65535, description="Jaeger's gRPC query API (api_v2/api_v3; compose: 16685).")
    jaeger_health: int = Field(
        0, ge=0, le=65535, description="Jaeger's health check extension, GET /status (compose: 13133).")

    @model_validator(mode="after")
    def _distinct(self) -> "PortSettings":
        fixed = [p for p in self.model_dump().values() if p]
        if len(set(fixed)) != len(fixed):
            raise ValueError(f"ports listed twice: {self.model_dump()}")
        return self


class TopicSettings(BaseModel):
    """The stack's own topics, created at ``up`` (LogAppendTime, like every run's topics)."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field("crayfish-stack-input", description="DataBatch records in: what a generator writes to.")
    output: str = Field("crayfish-stack-output", description="ScoredBatch records out: what the collector reads.")
    dead_letter: str = Field("crayfish-stack-dlq", description="DeadLetter records of batches that could not be scored.")
    probe: str = Field("crayfish-stack-probe", description="Clock-skew probe round trips of the collector.")
    partitions: int = Field(2, ge=1, description="Partitions of the input and output topics (the others get one).")


class StackSettings(BaseModel):
    """The native counterpart of compose/core.yaml + the Jaeger of compose/observability.yaml: Kafka,
    Jaeger, our Scoring server, the baseline Kafka worker (scoring through that server) and the
    collector, as local processes with their own process groups."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(
        default_factory=lambda: cache_dir("stack"),
        description="Folder of the running stack: stack.json (the state file), logs/, config/, "
                    "kafka/ (broker data, removed by `down`), collector/. Relative paths in the "
                    "config file are relative to the repository root.")
    ports: PortSettings = Field(default_factory=PortSettings, description="Listener ports (see PortSettings).")
    topics: TopicSettings = Field(default_factory=TopicSettings, description="The stack's topics.")
    consumer_group: str = Field("crayfish-stack-worker", description="Consumer group of the kafka-worker.")
    model: str = Field("ffnn", description="Model the Scoring server serves and the worker scores (built locally if missing).")
    backend: str = Field("onnxruntime", description="Embedded backend inside the Scoring server.")
    scoring_instances: int = Field(1, ge=1, description="Scorer instances of the Scoring server.")
    worker_parallelism: int = Field(1, ge=1, description="Worker processes of the kafka-worker (the paper's mp).")
    codec: str = Field("protobuf", description="Payload codec on the stack's topics: protobuf | crayfish-json.")
    kafka_heap: str = Field("512m", description="JVM -Xmx of the broker.")
    span_export_delay_ms: int = Field(
        500, ge=1,
        description="OTEL_BSP_SCHEDULE_DELAY of the stack's services: how soon a finished span is "
                    "sent to Jaeger (the SDK default is 5000).")
    ready_timeout_s: float = Field(180.0, gt=0, description="How long `up` waits for each service's health.")
    stop_timeout_s: float = Field(30.0, gt=0, description="SIGTERM grace per service at `down` before SIGKILL.")

    @property
    def state_file(self) -> Path:
        return self.dir / "stack.json"


def load_settings(path: Path | None = None, dir: Path | None = None) -> StackSettings:
    """Read the stack config (default compose/native/stack.yaml); ``dir`` overrides its ``dir``."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise StackConfigError(f"{path}: no such stack config")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise StackConfigError(f"{path}: expected a mapping at the top level")
    try:
        s = StackSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StackConfigError(f"{path}: {where}: {first['msg']}") from None
    if dir is not None:
        s.dir = Path(dir).resolve()
    elif not s.dir.is_absolute():
        s.dir = (REPO_ROOT / s.dir).resolve()
    return s
