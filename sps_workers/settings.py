"""What the runner tells a worker: one JSON document, the same for every engine."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from crayfish.kafka_client import KafkaClient
from sps_workers.options import EngineOptions


class ExternalSettings(BaseModel):
    """How the worker calls an external model server (see sps_workers.external)."""

    client: str = Field(description="Client kind (serving.clients): scoring | tf-serving | triton | torchserve | ray-serve | ray-serve-grpc.")
    target: str = Field(description="Server address, host:port.")
    call_mode: str = Field("blocking", description="blocking | pipelined | microbatch.")
    max_in_flight: int = Field(8, ge=1, description="Outstanding calls per worker instance (pipelined / microbatch).")
    microbatch_max: int = Field(8, ge=1, description="DataBatches concatenated into one call (microbatch).")
    timeout_s: float = Field(5.0, gt=0, description="Deadline of every call.")
    retries: int = Field(2, ge=0, description="Retries of a failed call (overloaded / unavailable / deadline) before dead-lettering.")
    backoff_s: float = Field(0.05, ge=0, description="First retry delay; doubles per attempt.")
    client_options: dict = Field(default_factory=dict, description="Extra options of the client kind.")


class WorkerSettings(BaseModel):
    """Settings of one SPS worker deployment (all of its parallel instances)."""

    bootstrap: str = Field(description="Kafka bootstrap servers, host:port[,host:port].")
    kafka_client: KafkaClient = Field(default_factory=KafkaClient, description="Client properties of the cluster (security), for every Kafka client of the engine; secrets as ${env:NAME} / ${file:PATH} references (crayfish.kafka_client).")
    start_offsets: dict[int, int] | None = Field(None, description="Pre-created input topic shared by runs: partition -> the offset this run starts at (its end when the run began; the runner also commits them for consumer_group). None: the topic's start (a fresh topic).")
    input_topic: str = Field(description="Topic with DataBatch records.")
    output_topic: str = Field(description="Topic the ScoredBatch records go to.")
    dead_letter_topic: str = Field(description="Topic for records that cannot be scored, with a reason.")
    consumer_group: str = Field(description="Consumer group shared by all instances of this worker.")
    codec: str = Field("protobuf", description="Payload codec: protobuf | crayfish-json.")
    model: str = Field(description="Model the worker serves; batches naming another model are dead-lettered.")
    backend: str = Field("onnxruntime", description="Embedded backend name (serving.embedded.BACKENDS).")
    backend_options: dict = Field(default_factory=dict, description="Options passed to the backend.")
    models_dir: str | None = Field(None, description="Where built models live (default .cache/models).")
    parallelism: int = Field(1, ge=1, description="Scoring parallelism mp: number of worker processes.")
    worker_id: str = Field("kafka", description="Prefix of each instance's id in ScoringFacts.worker_id.")
    max_poll_records: int = Field(256, ge=1, description="Records taken from the consumer per poll.")
    external: ExternalSettings | None = Field(None, description="Set: score through this external server instead of the embedded backend.")
    ready_file: str | None = Field(None, description="Set by the runner: the engine creates this file once its pipeline runs and reads the input topic (readiness of engines that do not join the consumer group).")
    engine_options: dict = Field(default_factory=dict, description="Engine-specific options (cluster address, operator parallelism, ...); each engine's folder documents its keys and rejects unknown ones.")


def load_config(raw: str, options: type[EngineOptions]) -> tuple[WorkerSettings, EngineOptions]:
    """WorkerSettings from JSON (or ``@path`` of a JSON file) and its ``engine_options`` checked
    against ``options`` (the engine's class); ValueError otherwise (pydantic's ValidationError,
    EngineOptionsError, a JSON error), OSError for a file that cannot be read."""
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text()
    settings = WorkerSettings.model_validate(json.loads(raw))
    return settings, options.from_settings(settings)


def config_error(exc: Exception) -> str:
    """One line for what :func:`load_config` raised: the field(s) and what is wrong."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}"
                         for e in exc.errors())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
