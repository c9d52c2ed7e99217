"""The backend registry -- one line per backend module -- and the one factory workers use,
:func:`create_scorer`."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from serving.embedded.base import Scorer, ScorerConfigError
from serving.models.build import model_paths, resolve_spec
from serving.models.spec import MODELS

# The backend modules, one line each; every module lists its Scorer classes in ``SCORERS``.
# Importing one is cheap: a backend imports its library (torch, TensorFlow, ...) when a scorer is
# created, so every environment can list every backend.
BACKEND_MODULES: list[str] = [
    "serving.embedded.onnxruntime_backend",
    "serving.embedded.simple",
    "serving.embedded.torchscript_backend",
    "serving.embedded.savedmodel_backend",
]


def _declared() -> dict[str, type[Scorer]]:
    table: dict[str, type[Scorer]] = {}
    for module in BACKEND_MODULES:
        for cls in importlib.import_module(module).SCORERS:
            if not (isinstance(cls, type) and issubclass(cls, Scorer)):
                raise TypeError(f"{module}.SCORERS: {cls!r} is not a Scorer subclass")
            if not cls.name:
                raise ValueError(f"{module}.{cls.__name__} has no backend name")
            other = table.get(cls.name)
            if other is not None and other is not cls:
                raise ValueError(f"backend name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
            table[cls.name] = cls
    return table


class _Backends(Mapping[str, type[Scorer]]):
    """name -> Scorer class of every module in :data:`BACKEND_MODULES`, read when asked."""

    def __getitem__(self, name: str) -> type[Scorer]:
        return _declared()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_declared())

    def __len__(self) -> int:
        return len(_declared())


BACKENDS: Mapping[str, type[Scorer]] = _Backends()


def backend(name: str) -> type[Scorer]:
    """The Scorer class of backend ``name``: its ``OPTIONS``, ``environment``, ``options_from``
    (the experiment's serving fields -> its options) and ``export`` (its model files). Raises
    :class:`ScorerConfigError` naming the known backends."""
    cls = BACKENDS.get(name)
    if cls is None:
        raise ScorerConfigError(f"unknown backend {name!r}; available backends: "
                                f"{', '.join(sorted(BACKENDS))}")
    return cls


def check_scorer(backend_name: str, model_name: str, models_dir: Path | str | None = None,
                 **options: Any) -> type[Scorer]:
    """Everything :func:`create_scorer` checks before it loads anything -- the backend, the model,
    the options, the model's files (when the backend reads them) -- without loading: launchers
    call it to fail in their own process, naming the culprit, rather than inside a server.
    Returns the backend's class; raises :class:`ScorerConfigError`."""
    cls = backend(backend_name)
    try:
        artifacts = model_paths(model_name, models_dir)
    except KeyError:
        raise ScorerConfigError(f"unknown model {model_name!r}; available models: {', '.join(sorted(MODELS))}") from None
    cls.resolve_options(options)  # option errors before any file access
    if cls.needs_artifacts and not artifacts.exists():
        raise ScorerConfigError(
            f"model {model_name!r} is not built in {artifacts.model_dir.parent}; run "
            f"`python -m serving.models build --model {model_name}"
            + (f" --dir {artifacts.model_dir.parent}`" if models_dir is not None else "`"))
    return cls


def create_scorer(backend_name: str, model_name: str, models_dir: Path | str | None = None,
                  **options: Any) -> Scorer:
    """A ready scorer for ``model_name`` on backend ``backend_name``.

    ``models_dir`` defaults to ``$CRAYFISH_MODELS_DIR`` or ``<repo>/.cache/models``. Raises
    :class:`ScorerConfigError` (a ``ValueError``) naming the unknown backend / model / option,
    a bad option value, or a model that has not been built (it is never built here: a build
    inside a measured run would skew it).
    """
    cls = check_scorer(backend_name, model_name, models_dir, **options)
    artifacts = model_paths(model_name, models_dir) if cls.needs_artifacts else None
    return cls(resolve_spec(model_name, models_dir), artifacts, **options)
