"""Settings of one generator run (what the runner hands the generator service)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from crayfish.kafka_client import KafkaClient

from services.generator.workload_configs import WorkloadConfig


class Stall(BaseModel):
    """A known pause of the sender (test setting)."""

    before_sequence: int = Field(ge=0, description="The batch (sequence number) the sender waits before.")
    ms: float = Field(gt=0, description="How long it waits, ms.")


class InputTensor(BaseModel):
    """One named input of the model (the named-tensor contract, DataBatch.inputs)."""

    name: str = Field(description="The model's input name.")
    shape: list[int] = Field(description="Shape of one item (no batch axis).")
    dtype: str = Field(description="numpy dtype name (float32, int64, bool, ...).")
    low: int | None = Field(None, description="Integer inputs: synthetic values from low (inclusive)...")
    high: int | None = Field(None, description="... to high (exclusive); None: [0, 256).")
    fill: str = Field("random", description="random, or ones (every value 1: attention masks).")


class GeneratorSettings(BaseModel):
    bootstrap: str = Field(description="Kafka bootstrap servers.")
    kafka_client: KafkaClient = Field(default_factory=KafkaClient, description="Client properties of the cluster (security); secrets as references (crayfish.kafka_client).")
    topic: str = Field(description="Input topic the DataBatch records go to.")
    feedback_topics: list[str] = Field(default_factory=list,
                                       description="Output and dead-letter topics; closed loop reads completions there.")
    run_id: str = Field(description="Run id stamped into every DataBatch.")
    model: str = Field(description="Model name stamped into every DataBatch.")
    item_shape: list[int] = Field(description="Shape of one data point, e.g. [1, 784].")
    dtype: str = Field("float32", description="Element type of the synthetic data.")
    tensors: list[InputTensor] = Field(default_factory=list, description="The model's inputs by name: when given, every batch carries DataBatch.inputs (one tensor per name; item_shape and dtype are then not used); empty: DataBatch.input.")
    batch_size: int = Field(1, ge=1, description="Data points per DataBatch (the paper's bsz).")
    codec: str = Field("protobuf", description="Payload codec: protobuf | crayfish-json.")
    workload: WorkloadConfig = Field(description="Arrival process; see services.generator.workload_configs.")
    seed: int = Field(42, description="Seed of the schedule and of the synthetic data.")
    pool_size: int = Field(64, ge=1, description="Distinct pre-built batches reused cyclically.")
    processes: int | None = Field(None, ge=1, description="Producer processes; None = ceil(peak rate / per_process_rate).")
    per_process_rate: float = Field(4000.0, gt=0, description="Batches/s one producer process is trusted to hold (auto mode).")
    probe_topic: str | None = Field(None, description="Topic for the clock-skew probes, sent with this generator's clock before the workload; None skips probing.")
    probes: int = Field(10, ge=1, description="Clock-skew probe round trips.")
    # Test settings: they inject a known fault so that the measurement can be proven on it.
    clock_offset_ms: float = Field(0.0, description="Test setting: shift this generator's wall clock by this many ms (the skew bound must contain minus it, latencies shrink by it).")
    stall: Stall | None = Field(None, description="Test setting: pause the sender before one batch (its lateness, send delay and latency from schedule must show the pause).")


def input_tensors(spec) -> list[InputTensor]:
    """The named inputs of a model (a serving.models.spec.ModelSpec) as the generator sends them."""
    return [InputTensor(name=t.name, shape=list(t.shape), dtype=t.dtype, low=t.low, high=t.high, fill=t.fill)
            for t in spec.inputs]
