"""Backend registry and the one factory workers use: :func:`create_scorer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.embedded.base import Scorer, ScorerConfigError
from serving.embedded.onnxruntime_backend import OnnxRuntimeScorer
from serving.embedded.simple import NoopScorer, SleepScorer
from serving.models.build import model_paths
from serving.models.spec import MODELS

BACKENDS: dict[str, type[Scorer]] = {}


def register_backend(cls: type[Scorer]) -> type[Scorer]:
    """Add a :class:`Scorer` subclass to :data:`BACKENDS` under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"{cls!r} is not a Scorer subclass")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no backend name")
    other = BACKENDS.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"backend name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    BACKENDS[cls.name] = cls
    return cls


for _cls in (OnnxRuntimeScorer, NoopScorer, SleepScorer):
    register_backend(_cls)
import serving.embedded.savedmodel_backend  # noqa: E402,F401 - registers "savedmodel" (imports TF lazily)
import serving.embedded.torchscript_backend  # noqa: E402,F401 - registers "torchscript" (imports torch lazily)


def create_scorer(backend: str, model_name: str, models_dir: Path | str | None = None,
                  **options: Any) -> Scorer:
    """A ready scorer for ``model_name`` on ``backend``.

    ``models_dir`` defaults to ``$CRAYFISH_MODELS_DIR`` or ``<repo>/.cache/models``. Raises
    :class:`ScorerConfigError` (a ``ValueError``) naming the unknown backend / model / option,
    a bad option value, or a model that has not been built (it is never built here: a build
    inside a measured run would skew it).
    """
    cls = BACKENDS.get(backend)
    if cls is None:
        raise ScorerConfigError(f"unknown backend {backend!r}; available backends: "
                                f"{', '.join(sorted(BACKENDS))}")
    spec = MODELS.get(model_name)
    if spec is None:
        raise ScorerConfigError(f"unknown model {model_name!r}; available models: {', '.join(sorted(MODELS))}")
    cls.resolve_options(options)  # option errors before any file access
    artifacts = model_paths(model_name, models_dir)
    if cls.needs_artifacts and not artifacts.exists():
        raise ScorerConfigError(
            f"model {model_name!r} is not built in {artifacts.model_dir.parent}; run "
            f"`python -m serving.models build --model {model_name}"
            + (f" --dir {artifacts.model_dir.parent}`" if models_dir is not None else "`"))
    return cls(spec, artifacts if cls.needs_artifacts else None, **options)
