"""What the runner tells a worker: one JSON document, the same for every engine."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkerSettings(BaseModel):
    """Settings of one SPS worker deployment (all of its parallel instances)."""

    bootstrap: str = Field(description="Kafka bootstrap servers, host:port[,host:port].")
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
