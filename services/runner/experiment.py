"""Experiment files: YAML validated by pydantic. A bad field fails with one line naming it.

Top-level keys (see README "Experiment files"):
  name, model, engine, serving, batch_size, parallelism, codec, workload, warmup, repetitions,
  kafka, sweep, search, validity, bursts, seed.

A run measures:
- the base point (all fields as given), or one point per combination of ``sweep`` values;
- and, when ``search`` is present, a sustainable-throughput search (its own points).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crayfish.codec import codecs
from crayfish.kafka_client import KafkaClient, KafkaClientError
from serving.embedded import BACKENDS, ScorerConfigError, backend
from serving.external import SERVERS, available, server_spec
from serving.models import MODELS, ModelFileError, read_signature
from serving.models.files import (FORMAT_BACKENDS, FORMAT_ONNX, FORMAT_SAVEDMODEL, FORMAT_TORCHSCRIPT, default_name, model_format,
                                  spec_from_signature)
from serving.models.zoo import ZOO
from services.generator.settings import Stall
from services.generator.workloads import WorkloadConfig
from sps_workers import ENGINES
from sps_workers.options import EngineOptionsError

# Engines, models and codecs are the names their registries hold when a file is validated
# (sps_workers.ENGINES, serving.models.MODELS, crayfish.codec.codecs()): adding one there is enough.
SWEEPABLE = ("batch_size", "parallelism", "codec", "rate", "outstanding", "delay_ms", "threads", "call_mode",
             "server", "instances", "max_in_flight", "serving", "engine", "engine_options", "named_tensors")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DynamicBatchingConfig(Strict):
    max_batch_size: int = Field(ge=1, description="Most rows the server scores in one backend call.")
    max_queue_delay_us: int = Field(0, ge=0, description="How long the server waits for more requests to fill a batch.")


class ServingConfig(Strict):
    """How the scoring operator gets its predictions."""

    kind: Literal["embedded", "external"] = Field("embedded", description="embedded: the backend runs inside the worker; external: a model server is called over the network.")
    backend: str = Field("onnxruntime", description="Embedded backend (onnxruntime | noop | sleep | ...): in the worker, or inside our Scoring server when kind is external.")
    threads: int = Field(1, ge=1, description="Intra-op threads of the backend (paper: 1).")
    inter_threads: int = Field(1, ge=1, description="Inter-op threads of the backend (paper: 1).")
    delay_ms: float | None = Field(None, ge=0, description="For backend 'sleep': the fixed delay per call.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where inference runs.")
    # external serving
    server: str = Field("scoring", description="External server: scoring | tf-serving | triton | torchserve | ray-serve | ray-serve-grpc.")
    target: str | None = Field(None, description="Address of an already running server (host:port); empty = the runner starts one.")
    instances: int | None = Field(None, ge=1, description="Server-side model instances / workers / replicas (default: parallelism, as the paper).")
    call_mode: Literal["blocking", "pipelined", "microbatch"] = Field("blocking", description="How workers call the server (blocking = the paper).")
    max_in_flight: int = Field(8, ge=1, description="Outstanding calls per worker instance (pipelined / microbatch).")
    microbatch_max: int = Field(8, ge=1, description="DataBatches per call (microbatch).")
    timeout_ms: float = Field(5000.0, gt=0, description="Deadline of every call.")
    retries: int = Field(2, ge=0, description="Retries before a batch is dead-lettered with the server's error.")
    batching: DynamicBatchingConfig | None = Field(None, description="Server-side dynamic batching (our Scoring server).")

    @model_validator(mode="after")
    def _check(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown embedded backend {self.backend!r}; known: {', '.join(sorted(BACKENDS))}")
        if self.backend == "sleep" and self.delay_ms is None:
            raise ValueError("backend 'sleep' needs delay_ms")
        if self.kind == "external":
            if self.server not in SERVERS:
                raise ValueError(f"unknown external server {self.server!r}; known: {', '.join(SERVERS)}")
            if self.target is None and not available(self.server):
                raise ValueError(f"server {self.server!r} cannot be started from this checkout yet")
        if self.runs_backend():
            # The options the backend will get, checked as it checks them when it starts.
            try:
                backend(self.backend).resolve_options(self.backend_options())
            except ScorerConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def runs_backend(self) -> bool:
        """Whether ``backend`` runs for this configuration: in the worker (embedded), or inside
        the Scoring server the runner starts (the other servers have their own runtimes, and a
        running server given as ``target`` has its backend already)."""
        return self.kind == "embedded" or (self.target is None and server_spec(self.server).runs_backend)

    def server_options(self) -> dict:
        """What the runner passes to the external server it starts besides model, instances and
        paths (the Scoring server runs ``backend`` with its options and dynamic batching)."""
        if self.kind != "external" or not self.runs_backend():
            return {}
        return {"backend": self.backend, "backend_options": self.backend_options(),
                "batching": self.batching.model_dump() if self.batching else None}

    def backend_options(self) -> dict:
        """The backend's options from this config's fields (each backend declares the mapping)."""
        return backend(self.backend).options_from(threads=self.threads, inter_threads=self.inter_threads,
                                                  device=self.device, delay_ms=self.delay_ms)


class WarmupConfig(Strict):
    fraction: float = Field(0.25, ge=0, lt=1, description="Share of records (in output order) excluded as warm-up (paper: 0.25).")
    window_s: float | None = Field(None, ge=0, description="Exclude this many seconds from the first creation instead of a fraction.")


class PipelineTopics(Strict):
    """Topics that already exist, used as they are: the topics of a pipeline that already runs
    (``engine: external``), or pre-created topics any engine reads and writes (a cluster where the
    user may not create topics). The runner never creates nor deletes them; it checks that they
    exist and that the output topic is stamped by the broker (LogAppendTime) before measuring.
    Shared by several runs, each run stays apart: its worker starts from the input topic's end
    under its own consumer group, and the collector reads from the output's end and keeps only
    its own run's records."""

    input: str = Field(description="The topic the pipeline reads (the generator writes here).")
    output: str = Field(description="The topic the pipeline writes scored batches to (LogAppendTime).")
    dead_letter: str = Field(description="The pipeline's dead-letter topic (read for accounting; may stay empty).")
    probe: str | None = Field(None, description="A pre-created topic for the clock-skew probes (LogAppendTime); none: the runner creates one per run, which needs permission to create topics.")
    group: str | None = Field(None, description="The pipeline's consumer group, when it has one (its committed lag is sampled).")
    ready_timeout_s: float = Field(60.0, gt=0, description="How long the first output of a probe batch may take before the run stops with an error.")


class KafkaConfig(Strict):
    bootstrap: str | None = Field(None, description="Existing cluster host:port; empty = start a local broker.")
    partitions: int = Field(2, ge=1, description="Partitions of the input and output topics (raised to parallelism if lower).")
    topics: PipelineTopics | None = Field(None, description="Topics that already exist, used as they are (engine external: the pipeline's; any other engine: pre-created topics); none: fresh topics per point.")
    client: dict[str, str] = Field(default_factory=dict, description="Kafka client properties for every client of the run (librdkafka names: security.protocol, sasl.mechanisms, sasl.username, sasl.password, ssl.ca.location, ...); a secret is ${env:NAME} or ${file:PATH}, never written here.")
    client_file: Path | None = Field(None, description="A .properties file with client properties (read by every process itself; may hold secrets); kafka.client wins. A relative path is taken from the experiment file's folder.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of the topics the runner creates.")
    topic_configs: dict[str, str] = Field(default_factory=dict, description="Configs of the topics the runner creates (e.g. min.insync.replicas: 2); the runner's LogAppendTime stamping cannot be changed.")

    @model_validator(mode="after")
    def _client_usable(self):
        try:
            self.client_settings().check()
        except KafkaClientError as exc:
            raise NamedFieldError(f"kafka.client: {exc}") from None
        if "message.timestamp.type" in self.topic_configs:
            raise NamedFieldError("kafka.topic_configs.message.timestamp.type: the broker must stamp the records "
                                  "(LogAppendTime); the latency is measured on those stamps")
        return self

    def client_settings(self) -> KafkaClient:
        """The client properties as every service's settings carry them (references, not secrets)."""
        return KafkaClient(properties=self.client, properties_file=str(self.client_file) if self.client_file else None)


class SearchConfig(Strict):
    """Sustainable-throughput search: grow the rate x2 until a rate fails, then bisect."""

    start_rate: float = Field(100.0, gt=0, description="First rate tried (batches/s).")
    max_rate: float = Field(100000.0, gt=0, description="Never try above this rate.")
    precision: float = Field(0.1, gt=0, lt=1, description="Stop bisecting when (fail - pass)/pass is below this.")
    point_duration_s: float = Field(12.0, gt=0, description="Workload duration of each tried rate.")
    workload: Literal["constant", "poisson"] = Field("constant", description="Arrival process of the tried rates.")
    slo_ms: float | None = Field(None, gt=0, description="Latency SLO; a rate whose percentile exceeds it fails.")
    slo_percentile: Literal["p50", "p90", "p95", "p99", "p999"] = Field("p99", description="Which percentile the SLO bounds.")
    batch_size: int | None = Field(None, ge=1, description="Batch size for the search (default: the experiment's).")
    max_points: int = Field(14, ge=1, description="Upper bound on tried rates.")
    per_point: bool = Field(False, description="With a sweep: one search per sweep combination (e.g. per serving path) instead of one on the base.")


class ValidityConfig(Strict):
    min_duration_s: float = Field(3.0, ge=0, description="A point measured over less time than this is invalid.")
    min_count: int = Field(50, ge=0, description="A point with fewer kept records than this is invalid.")
    rate_tolerance: float = Field(0.02, ge=0, description="Achieved input rate may miss the target by this share.")


class BurstConfig(Strict):
    window_s: float = Field(1.0, gt=0, description="Window of the latency median used for recovery.")
    hold_s: float = Field(5.0, gt=0, description="How long the median must stay within tolerance.")
    tolerance: float = Field(0.10, gt=0, description="Allowed relative excess over the pre-burst baseline (a median below the baseline counts as recovered).")
    abs_tolerance_ms: float = Field(1.0, ge=0, description="Floor of the allowed distance (the broker stamps' 1 ms resolution).")
    baseline_s: float = Field(10.0, gt=0, description="The baseline is the latency median over this long before each burst.")


class ToleranceConfig(Strict):
    atol: float = Field(1e-4, ge=0, description="Absolute part: a checked value is right when |output - reference| <= atol + rtol * |reference|.")
    rtol: float = Field(0.0, ge=0, description="Relative part (e.g. 1e-3 for a model served in float16 or on a GPU).")


class InjectConfig(Strict):
    """Known faults injected on purpose, to prove a measurement on a known case: each must come back
    in the results as exactly what was injected (docs/results.md, "Proving a measurement")."""

    clock_offset_ms: float = Field(0.0, description="Shift the generator's clock by this many ms: the clock-skew bound must contain minus it, and every latency shrinks by it.")
    generator_stall: Stall | None = Field(None, description="Pause the generator before one batch ({before_sequence, ms}): its lateness, the send delay and the latency from schedule show the pause.")


class HostsConfig(Strict):
    """Generators and collectors on several hosts (docs/clusters.md, "Load from several hosts"). With more than one of either, the
    runner starts neither for a point: processes on other hosts join the point by its run id
    (``crayfish generator --join RUN_ID``, ``crayfish collector --join RUN_ID``), and the runner merges
    what they sent and collected into the point's files."""

    generators: int = Field(1, ge=1, description="Generator processes that join each point; they share the schedule (batch sequence % generators), each probing its own clock skew.")
    collectors: int = Field(1, ge=1, description="Collector processes that join each point; each reads the output and dead-letter partitions p with p % collectors == its part.")
    join_timeout_s: float = Field(120.0, gt=0, description="How long a point waits for all of them to join and be ready; then it fails, saying how many joined.")


class InputOverride(Strict):
    shape: list[int] | None = Field(None, description="Shape of one item (no batch axis), where the file leaves axes free.")
    dtype: str | None = Field(None, description="Element type (float32, int64, bool, ...): needed for a TorchScript file, which does not say; must match an ONNX file's.")
    range: tuple[int, int] | None = Field(None, description="Integer inputs: synthetic values uniform in [low, high) (default [0, 256)).")
    vocab: int | None = Field(None, ge=1, description="Integer inputs (token ids): synthetic values in [0, vocab); same as range: [0, vocab].")
    fill: Literal["random", "ones"] | None = Field(None, description="ones: every value 1 (attention masks); random (default): drawn as above.")


class ModelFile(Strict):
    """A model file of your own (serving.models.files): its signature is read from the file. Or a
    model of the zoo (serving.models.zoo), built here by its framework and served as a file."""

    path: Path | None = Field(None, description="The model file (ONNX); a relative path is taken from the experiment file's folder.")
    zoo: str | None = Field(None, description="Instead of a path: a model of the zoo (serving.models.zoo: fraud-gbt, text-encoder), built here.")
    seq_len: int | None = Field(None, ge=1, description="Zoo models with a sequence axis (text-encoder): tokens per item (default 128).")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="Name it is served and reported under (default: from the file name; a zoo model keeps its own).")
    inputs: dict[str, InputOverride] = Field(default_factory=dict, description="Per input name, what the file does not say: shape, and what synthetic values hold (range, vocab, fill).")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.zoo is None):
            raise NamedFieldError("path: give either path (a model file) or zoo (a model of the zoo: "
                             f"{', '.join(ZOO)})")
        if self.zoo is not None:
            if self.zoo not in ZOO:
                raise NamedFieldError(f"zoo: unknown zoo model {self.zoo!r}; the zoo: {', '.join(ZOO)}")
            z = ZOO[self.zoo]
            if self.name not in (None, self.zoo) or self.inputs:
                raise NamedFieldError(f"zoo: {self.zoo} is served under its own name and inputs; only seq_len is a setting")
            if self.seq_len is not None and z.max_seq_len is None:
                raise NamedFieldError(f"seq_len: {self.zoo} has no sequence axis")
            if self.seq_len is not None and self.seq_len > z.max_seq_len:
                raise NamedFieldError(f"seq_len: {self.seq_len} is longer than {self.zoo}'s {z.max_seq_len} positions")
        elif self.seq_len is not None:
            raise NamedFieldError("seq_len: only for a zoo model; a file's item shape goes in inputs: {<input>: {shape: [...]}}")
        return self

    def overrides(self) -> dict[str, dict]:
        return {k: v.model_dump(exclude_none=True) for k, v in self.inputs.items()}

    def spec(self, name: str):
        """What will be served (for validation, before anything is imported or built)."""
        if self.zoo is not None:
            return ZOO[self.zoo].spec(self.seq_len)
        return spec_from_signature(read_signature(self.path, self.overrides()), name, self.overrides())


# The servers a model file runs behind, per format (its embedded backends: FORMAT_BACKENDS).
FILE_MODEL_SERVERS = {FORMAT_ONNX: ("scoring", "triton", "ray-serve", "ray-serve-grpc", "torchserve", "tf-serving"),
                      FORMAT_TORCHSCRIPT: ("scoring", "torchserve"), FORMAT_SAVEDMODEL: ("scoring", "tf-serving")}
# ... and those of them that take a model with several inputs or outputs (the named-tensor contract).
# ``engine: external``: the runner starts no engine and measures a pipeline that already runs.
EXTERNAL_PIPELINE = "external"
NAMED_TENSOR_SERVERS = ("scoring", "triton", "ray-serve", "ray-serve-grpc", "tf-serving", "torchserve")


class Experiment(Strict):
    name: str = Field(description="Name of the experiment (used in the run folder name).")
    model: str = Field("ffnn", description="Model: a built-in name (serving.models.MODELS: ffnn, resnet50, ...), a model of the zoo (fraud-gbt, text-encoder, or {zoo: text-encoder, seq_len: 64}), or a model file of your own: {path: my.onnx, name: ..., inputs: {<input>: {shape: [...]}}}.")
    model_file: ModelFile | None = Field(None, description="Set by `model: {path: ...}`: the model file of your own; `model` is then its name.")
    engine: str = Field("kafka", description="Stream processor running the scoring op: a name in "
                                             "sps_workers.ENGINES (kafka, flink, ..., command: any program), "
                                             "or external: a pipeline that already runs (kafka.topics).")
    serving: ServingConfig = Field(default_factory=ServingConfig)
    batch_size: int = Field(1, ge=1, description="Data points per batch (the paper's bsz).")
    parallelism: int = Field(1, ge=1, description="Scoring parallelism mp.")
    codec: str = Field("protobuf", description="Payload codec: a name of crayfish.codec (protobuf, crayfish-json).")
    named_tensors: bool = Field(False, description="Send the inputs by name (DataBatch.inputs, the named-tensor contract) even when the model has one input and one output; a model with several always is. Sweep [false, true] to measure what the named contract costs.")
    workload: WorkloadConfig = Field(description="Arrival process (type + its parameters).")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    repetitions: int = Field(1, ge=1, description="Repetitions of every point (mean ± sd reported).")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    sweep: dict[str, list[Any]] | None = Field(None, description=f"Values to sweep; keys: {', '.join(SWEEPABLE)}.")
    search: SearchConfig | None = Field(None, description="Sustainable-throughput search.")
    validity: ValidityConfig = Field(default_factory=ValidityConfig)
    bursts: BurstConfig = Field(default_factory=BurstConfig)
    seed: int = Field(42, description="Seed of schedules and synthetic data.")
    trace_sample: float = Field(0.01, ge=0, le=1, description="Share of batches traced end to end (spans per hop), unless OTEL_TRACES_SAMPLER is set in the environment.")
    check_predictions: float = Field(0.01, ge=0, le=1, description="Share of scored batches whose predictions the collector checks against the reference model (accounting: checked, wrong).")
    prediction_tolerance: ToleranceConfig = Field(default_factory=ToleranceConfig, description="When a checked prediction counts as right, against the model's reference (numpy for the built-in models, ONNX Runtime on the CPU on the file for a model file).")
    generator_processes: int | None = Field(None, ge=1, description="Producer processes of the generator (default: by rate).")
    inject: InjectConfig = Field(default_factory=InjectConfig, description="Known faults to inject (proving the measurement; default: none).")
    hosts: HostsConfig = Field(default_factory=HostsConfig, description="Generators and collectors joining from other hosts ({generators, collectors, join_timeout_s}); default: one of each, started by the runner.")
    engine_options: dict = Field(default_factory=dict, description="Engine-specific options passed to the worker, checked against the engine's options class (sps_workers/<engine>/options.py; what each does: the package docstring), e.g. flink: operator_parallelism [source, scoring, sink], jobmanager; spark: master; ray: address.")

    @model_validator(mode="before")
    @classmethod
    def _model_file_given(cls, data):
        # `model: {path: ...}` -> model_file, and `model` becomes the name it is served under
        if isinstance(data, dict) and isinstance(data.get("model"), str) and data["model"] in ZOO:
            data = {**data, "model_file": {"zoo": data["model"]}}      # `model: fraud-gbt`
        elif isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = dict(data)
            given = data.pop("model")
            data["model_file"] = given
            data["model"] = given.get("name") or given.get("zoo") or default_name(str(given.get("path", "model")))
        return data

    @model_validator(mode="after")
    def _model_known(self):
        if self.named_tensors and self.codec != "protobuf":
            raise NamedFieldError(f"named_tensors: codec {self.codec} carries one unnamed tensor; use codec protobuf")
        if self.model_file is None:
            if self.model not in MODELS:
                raise NamedFieldError(f"model: unknown model {self.model!r}; known: {', '.join(MODELS)}, "
                                      "or a file: {path: my.onnx}")
            return self
        if self.model in MODELS:
            raise NamedFieldError(f"model.name: {self.model!r} is a built-in model; give the file another name")
        try:
            spec = self.model_file.spec(self.model)
        except ModelFileError as exc:
            raise NamedFieldError(f"model.path: {exc}") from None
        source = self.model_file.path or f"zoo model {self.model_file.zoo}"
        fmt = model_format(self.model_file.path) if self.model_file.path else FORMAT_ONNX
        sv = self.serving
        if spec.named and self.codec != "protobuf":
            raise NamedFieldError(f"codec: {self.codec} carries one unnamed tensor; model {self.model} has "
                                  f"{len(spec.inputs)} inputs and {len(spec.outputs)} outputs (named tensors): "
                                  "use codec protobuf")
        if spec.named and sv.kind == "external" and sv.server not in NAMED_TENSOR_SERVERS:
            raise NamedFieldError(f"serving.server: {sv.server} cannot serve named tensors yet (model {self.model}: "
                                  f"inputs {', '.join(t.name for t in spec.inputs)}); servers that can: "
                                  f"{', '.join(NAMED_TENSOR_SERVERS)}")
        backends = FORMAT_BACKENDS[fmt]
        if sv.backend not in backends:
            raise NamedFieldError(f"serving.backend: {sv.backend} cannot serve a model file ({source}, "
                                  f"{fmt}); use one of {', '.join(backends)}")
        servers = FILE_MODEL_SERVERS[fmt]
        if sv.kind == "external" and sv.server not in servers:
            raise NamedFieldError(f"serving.server: {sv.server} cannot serve a model file yet ({source}, "
                                  f"{fmt}); servers that can: {', '.join(servers)}")
        if fmt != FORMAT_ONNX and sv.kind == "embedded" and self.engine in ENGINES and ENGINES[self.engine].environment != "core":
            raise NamedFieldError(f"engine: {self.engine} runs in its own environment, without the {fmt} file's framework, "
                                  f"so it cannot embed {source}; use engine kafka, or serving: scoring")
        return self

    @field_validator("engine")
    @classmethod
    def _engine_registered(cls, v):
        return _registered("engine", v, [*ENGINES, EXTERNAL_PIPELINE])

    @field_validator("codec")
    @classmethod
    def _codec_registered(cls, v):
        return _registered("codec", v, codecs())

    @model_validator(mode="after")
    def _hosts_share_an_open_loop(self):
        if self.hosts.generators > 1 and self.workload.type == "closed_loop":
            raise NamedFieldError("hosts.generators: a closed loop runs on one generator (each batch waits for the "
                                  "previous one's output); give 1, or an open-loop workload")
        return self

    @model_validator(mode="after")
    def _engine_options(self):
        if self.engine == EXTERNAL_PIPELINE:
            return self._external_pipeline()
        if self.kafka.topics is not None and not self.kafka.bootstrap:
            raise NamedFieldError("kafka.topics: pre-created topics live on a cluster: name it (kafka.bootstrap); "
                                  "without one the runner starts a fresh broker and gives every point fresh topics")
        # The engine's own options class, as its worker checks them at start (parallelism included).
        try:
            ENGINES[self.engine].check_options(self.engine_options, self.parallelism)
        except EngineOptionsError as exc:
            raise NamedFieldError(str(exc)) from None
        return self

    def _external_pipeline(self):
        if self.kafka.topics is None or not self.kafka.bootstrap:
            raise NamedFieldError(f"kafka.topics: engine {EXTERNAL_PIPELINE} measures a pipeline that already runs: "
                                  "name its cluster (kafka.bootstrap) and topics (kafka.topics: {input, output, dead_letter})")
        if self.engine_options:
            raise NamedFieldError(f"engine_options: engine {EXTERNAL_PIPELINE} has no options (its settings are kafka.topics)")
        return self

    @field_validator("sweep")
    @classmethod
    def _sweep_keys(cls, v):
        if v is None:
            return v
        for key, values in v.items():
            if key not in SWEEPABLE:
                raise ValueError(f"cannot sweep {key!r}; sweepable: {', '.join(SWEEPABLE)}")
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.{key} must be a non-empty list")
        return v

    def points(self) -> list[dict]:
        """Parameter overrides of each sweep point (one empty dict without a sweep)."""
        if not self.sweep:
            return [{}]
        keys = list(self.sweep)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.sweep[k] for k in keys))]

    def with_overrides(self, overrides: dict) -> "Experiment":
        """A copy with sweep values applied (validated again)."""
        data = self.model_dump(mode="python")
        data["sweep"] = None
        data["search"] = None
        for key, value in overrides.items():
            if key in ("batch_size", "parallelism", "codec", "engine", "engine_options", "named_tensors"):
                data[key] = value
            elif key in ("rate", "outstanding"):
                data["workload"][key] = value
            elif key == "delay_ms":
                data["serving"]["delay_ms"] = value
            elif key in ("threads", "call_mode", "server", "instances", "max_in_flight"):
                data["serving"][key] = value
            elif key == "serving":
                # "embedded" or the name of an external server: one sweep over serving paths.
                if value == "embedded":
                    data["serving"]["kind"] = "embedded"
                else:
                    data["serving"].update(kind="external", server=value)
        return Experiment.model_validate(data)


def _registered(what: str, name: str, registry) -> str:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(registry)}")
    return name


class NamedFieldError(ValueError):
    """A problem found across fields whose message names its field already
    (``engine_options.bogus: unknown option of the kafka engine ...``)."""


class ExperimentError(ValueError):
    """A bad experiment file; the message is one line naming the field."""


def format_validation_error(exc: ValidationError) -> str:
    """One line: ``<field>: <what is wrong>`` for every problem, ``; ``-separated."""
    parts = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        loc = "model" + loc.removeprefix("model_file") if loc.startswith("model_file") else loc
        if isinstance(cause, NamedFieldError):
            parts.append(f"{loc + '.' if loc else ''}{cause}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc or '(top level)'}: {msg}")
    return "; ".join(parts)


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ExperimentError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: expected a mapping of fields at the top level")
    kafka = raw.get("kafka")
    if isinstance(kafka, dict) and isinstance(kafka.get("client_file"), str) and not Path(kafka["client_file"]).is_absolute():
        raw["kafka"] = {**kafka, "client_file": str(path.parent / kafka["client_file"])}
    given = raw.get("model")
    if isinstance(given, dict) and isinstance(given.get("path"), str) and not Path(given["path"]).is_absolute():
        raw["model"] = {**given, "path": str(path.parent / given["path"])}   # from the experiment's folder
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentError(f"{path}: {format_validation_error(exc)}") from None
