"""Settings of the scoring server (and of its transport-agnostic core).

One pydantic model, :class:`ScoringSettings`, read from JSON/YAML (``python -m serving.scoring
--config ...``) or built in code. Unknown keys are rejected, so a typo in a config fails loudly
instead of silently running with a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.models.spec import MODELS


class BatchingSettings(BaseModel):
    """Dynamic (server-side) batching of concurrent requests for one model.

    Each instance has a batcher thread: it takes the oldest queued request, then keeps adding
    queued requests while the batch has fewer than ``max_batch_size`` rows and less than
    ``max_queue_delay_us`` has passed since that first request arrived; it then scores the
    concatenated batch once and hands every caller its own rows. A request that alone has more
    rows than ``max_batch_size`` is scored on its own (never split).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(
        ge=1, description="Most rows (sum of the requests' batch dimensions) in one backend call.")
    max_queue_delay_us: int = Field(
        default=0, ge=0,
        description="How long, in microseconds after the first request of a batch arrived, the "
                    "batcher waits for more requests before scoring a partial batch. 0: take "
                    "only what is already queued.")


class TLSSettings(BaseModel):
    """Server-side TLS: the server's certificate chain and private key (PEM files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path = Field(description="PEM certificate chain the server presents.")
    key_file: Path = Field(description="PEM private key of that certificate.")


class ModelEntry(BaseModel):
    """One served model when it needs more than its name: a different served name, or its own
    backend (e.g. a ``sleep`` twin of ``ffnn`` next to the real one, for deadline tests).
    Unset fields fall back to the server-wide settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Name clients use in requests (ScoreRequest.model).")
    model: str | None = Field(
        default=None,
        description="Model spec / artifacts to serve under `name` (serving.models.MODELS); "
                    "default: `name` itself.")
    backend: str | None = Field(default=None, description="Backend for this model; default: `backend`.")
    backend_options: dict[str, Any] | None = Field(
        default=None, description="Options for this model's backend; default: `backend_options`.")
    warmup: bool | None = Field(default=None, description="Warm up this model's instances; default: `warmup`.")

    @property
    def spec_name(self) -> str:
        return self.model or self.name


class ServedModel(BaseModel):
    """A fully resolved served model (see :attr:`ScoringSettings.served_models`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec_name: str
    backend: str
    backend_options: dict[str, Any]
    warmup: bool


class ScoringSettings(BaseModel):
    """Everything the scoring server and its core need; every field has a default but the
    model must be built (``python -m serving.models build``) for file-backed backends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        default="127.0.0.1",
        description="Interface to bind. Loopback only by default; '0.0.0.0' / '::' to serve the "
                    "network (then consider `tls`).")
    port: int = Field(
        default=0, ge=0, le=65535,
        description="TCP port; 0 picks a free port (read it from build_server's return value or "
                    "from `ready_file`).")
    models: list[str | ModelEntry] = Field(
        default_factory=lambda: ["ffnn"], min_length=1,
        description="Models to serve: names from serving.models.MODELS, or ModelEntry objects "
                    "({name, model, backend, backend_options, warmup}) for a served name of "
                    "their own or a backend of their own. Each gets its own pool of `instances` "
                    "scorers.")
    backend: str = Field(
        default="onnxruntime",
        description="Embedded backend every instance runs (serving.embedded.BACKENDS: "
                    "onnxruntime, noop, sleep, ...).")
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options passed to each backend instance (e.g. intra_op_threads, "
                    "inter_op_threads for onnxruntime; delay_ms for sleep). Checked at load.")
    instances: int = Field(
        default=1, ge=1,
        description="Scorer instances per model (the paper's model parallelism, mp): each is its "
                    "own backend object (own ORT session, own threads); at most `instances` "
                    "requests (or batches) of a model run at once.")
    max_queue: int = Field(
        default=1024, ge=1,
        description="Most requests of one model waiting for a free instance (or, with batching, "
                    "waiting to join a batch). A request beyond it is rejected at once with "
                    "RESOURCE_EXHAUSTED instead of queueing without bound.")
    batching: BatchingSettings | None = Field(
        default=None,
        description="Dynamic batching per model; null scores every request on its own.")
    max_workers: int | None = Field(
        default=None, ge=1,
        description="gRPC handler threads. Default max(8, 2*instances*len(models)), and at least "
                    "2*max_batch_size with batching (a blocked unary call holds one thread, so "
                    "a full batch must fit while the next one gathers).")
    stream_max_in_flight: int | None = Field(
        default=None, ge=1,
        description="Requests of one ScoreStream scored concurrently (more are not read from the "
                    "stream until one finishes: flow control). Default max(8, 2*instances, "
                    "max_batch_size).")
    max_message_bytes: int = Field(
        default=256 * 1024 * 1024, ge=4 * 1024 * 1024,
        description="Largest gRPC message sent or received (a ResNet50 batch of 64 is ~38 MB; "
                    "gRPC's default is 4 MB).")
    tls: TLSSettings | None = Field(
        default=None, description="Serve TLS with this certificate/key; null serves plaintext.")
    models_dir: Path | None = Field(
        default=None,
        description="Where built models live; default $CRAYFISH_MODELS_DIR or <repo>/.cache/models.")
    warmup: bool = Field(
        default=True,
        description="Score one zero row on every instance while loading, so the first real "
                    "request pays no lazy initialisation. Turn off for calibration backends "
                    "whose calls cost only time (sleep).")
    ready_file: Path | None = Field(
        default=None,
        description="Written (atomically) with the bound port once every model is loaded and "
                    "health says SERVING; removed on shutdown. Lets a launcher wait for a "
                    "port-0 server.")
    service_name: str = Field(
        default="scoring",
        description="Name of this service in logs and run records (the gRPC service is always "
                    "crayfish.v1.Scoring).")
    protocols: list[str] = Field(
        default_factory=list,
        description="Extra protocol adapters as 'package.module:function' import paths; each "
                    "function is called as fn(server, core) before the server starts (see "
                    "serving.scoring.server, 'Adding a protocol').")
    shutdown_grace_s: float = Field(
        default=5.0, ge=0,
        description="On SIGTERM/SIGINT: seconds in-flight calls get to finish before they are "
                    "cancelled.")

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str | ModelEntry]) -> list[str | ModelEntry]:
        specs = [m if isinstance(m, str) else m.spec_name for m in v]
        unknown = [m for m in specs if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(sorted(MODELS))}")
        names = [m if isinstance(m, str) else m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"model names listed twice: {names}")
        return v

    @field_validator("protocols")
    @classmethod
    def _import_paths(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p.count(":") != 1 or not all(p.split(":"))]
        if bad:
            raise ValueError(f"protocols must be 'package.module:function', got {bad}")
        return v

    # -- derived values ----------------------------------------------------------------------
    @property
    def served_models(self) -> list[ServedModel]:
        """Every entry of `models` with the server-wide defaults filled in."""
        out = []
        for m in self.models:
            e = ModelEntry(name=m) if isinstance(m, str) else m
            out.append(ServedModel(
                name=e.name, spec_name=e.spec_name, backend=e.backend or self.backend,
                backend_options=dict(self.backend_options if e.backend_options is None
                                     else e.backend_options),
                warmup=self.warmup if e.warmup is None else e.warmup))
        return out

    @property
    def model_names(self) -> list[str]:
        """The names clients use, in the order of `models`."""
        return [m if isinstance(m, str) else m.name for m in self.models]

    @property
    def effective_max_workers(self) -> int:
        if self.max_workers is not None:
            return self.max_workers
        n = max(8, 2 * self.instances * len(self.models))
        if self.batching is not None:
            n = max(n, 2 * self.batching.max_batch_size)
        return n

    @property
    def effective_stream_max_in_flight(self) -> int:
        if self.stream_max_in_flight is not None:
            return self.stream_max_in_flight
        n = max(8, 2 * self.instances)
        if self.batching is not None:
            n = max(n, self.batching.max_batch_size)
        return n


__all__ = ["ScoringSettings", "BatchingSettings", "TLSSettings", "ModelEntry", "ServedModel"]
