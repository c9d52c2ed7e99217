"""Settings of the transport-agnostic core: which models, on which backend, how many instances,
queue bound, dynamic batching. A transport's settings extend :class:`CoreSettings` (the Scoring
server's: :class:`serving.scoring.settings.ScoringSettings`), so one config object serves both.

Unknown keys are rejected, so a typo in a config fails loudly instead of silently running with a
default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.models.build import resolve_spec
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
    """A fully resolved served model (see :attr:`CoreSettings.served_models`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec_name: str
    backend: str
    backend_options: dict[str, Any]
    warmup: bool


class CoreSettings(BaseModel):
    """Everything :class:`serving.core.ScoringCore` needs; every field has a default but the
    model must be built (``python -m serving.models build``) for file-backed backends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    models_dir: Path | None = Field(
        default=None,
        description="Where built models live; default $CRAYFISH_MODELS_DIR or <repo>/.cache/models.")
    warmup: bool = Field(
        default=True,
        description="Score one zero row on every instance while loading, so the first real "
                    "request pays no lazy initialisation. Turn off for calibration backends "
                    "whose calls cost only time (sleep).")
    service_name: str = Field(
        default="scoring",
        description="Name of this service in logs and run records (the gRPC service is always "
                    "crayfish.v1.Scoring).")

    @field_validator("models")
    @classmethod
    def _named_once(cls, v: list[str | ModelEntry]) -> list[str | ModelEntry]:
        names = [m if isinstance(m, str) else m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"model names listed twice: {names}")
        return v

    @model_validator(mode="after")
    def _known_models(self) -> "CoreSettings":
        # built-in models, or model files imported into models_dir (serving.models.files)
        specs = [m if isinstance(m, str) else m.spec_name for m in self.models]
        unknown = [m for m in specs if m not in MODELS and not _resolves(m, self.models_dir)]
        if unknown:
            raise ValueError(f"models: unknown model(s) {unknown}; known: {', '.join(sorted(MODELS))}")
        return self

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


__all__ = ["CoreSettings", "BatchingSettings", "ModelEntry", "ServedModel"]


def _resolves(name: str, models_dir: Path | None) -> bool:
    try:
        resolve_spec(name, models_dir)
        return True
    except (KeyError, ValueError):
        return False
