"""The :class:`Scorer` base class, its option schema and its errors."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from crayfish.host.envs import python_for
from serving.models.build import ModelArtifacts
from serving.models.spec import FeedError, ModelSpec, check_feeds

_F32 = np.dtype(np.float32)


class ScoringError(ValueError):
    """The input batch does not fit the model (shape / dtype). Workers dead-letter the record."""


class ScorerConfigError(ValueError):
    """A scorer cannot be created: unknown backend, model or option, bad option value, model not built."""


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"not a boolean: {v!r}")


_REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One backend option. ``kind`` converts the given value (strings from a CLI/YAML are fine);
    ``check`` returns an error message (or ``None``) for a converted value."""

    kind: type
    default: Any = _REQUIRED
    help: str = ""
    check: Callable[[Any], str | None] | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def convert(self, backend: str, name: str, value: Any) -> Any:
        try:
            if self.kind is bool:
                v = _to_bool(value)
            elif self.kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(f"not an integer: {value!r}")
            elif isinstance(value, bool) and self.kind is not bool:
                raise ValueError(f"not a {self.kind.__name__}: {value!r}")
            else:
                v = self.kind(value)
        except (TypeError, ValueError) as exc:
            raise ScorerConfigError(f"backend {backend!r}: option {name!r}: {exc}") from None
        if self.choices is not None and v not in self.choices:
            raise ScorerConfigError(f"backend {backend!r}: option {name!r} must be one of "
                                    f"{', '.join(map(repr, self.choices))}, got {v!r}")
        if self.check is not None:
            msg = self.check(v)
            if msg:
                raise ScorerConfigError(f"backend {backend!r}: option {name!r} {msg}, got {v!r}")
        return v


def non_negative(v: Any) -> str | None:
    return "must be >= 0" if v < 0 else None


class Scorer:
    """An in-process model: ``score(batch) -> predictions``. See :mod:`serving.embedded`.

    Subclasses set :attr:`name`, :attr:`OPTIONS`, :attr:`needs_artifacts` (and
    :attr:`environment`, :attr:`exporter`, :meth:`options_from` where the defaults do not fit) and
    implement :meth:`_score` (and :meth:`close` if they hold resources). ``score`` validates the
    input and calls ``_score``.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[Mapping[str, Option]] = {}
    needs_artifacts: ClassVar[bool] = True
    # The environment (crayfish.host.envs, envs/<name>/requirements.txt) with the backend's
    # library: a worker or Scoring server using the backend runs with that interpreter.
    environment: ClassVar[str] = "core"
    # Module run as `python -m <exporter> --model M --dir D --seed S` in `environment` to write the
    # backend's model files next to the ONNX build; None: the backend reads the build as it is.
    exporter: ClassVar[str | None] = None

    # -- what the runner asks of a backend ---------------------------------------------------
    @classmethod
    def options_from(cls, *, threads: int = 1, inter_threads: int = 1, device: str = "cpu",
                     delay_ms: float | None = None) -> dict[str, Any]:
        """This backend's options for an experiment's ``serving`` fields: ``threads`` (intra-op
        threads), ``inter_threads`` (inter-op threads), ``device`` (cpu / cuda), ``delay_ms``
        (calibration delay). Default: none of them apply (``{}``)."""
        return {}

    @classmethod
    def export(cls, model: str, models_dir: Path | str, seed: int = 42, log: Callable[[str], Any] = print) -> None:
        """Write this backend's model files for ``model`` (cached by the exporter: a current export
        is kept) by running :attr:`exporter` in :attr:`environment`; nothing without an exporter."""
        if cls.exporter is None:
            return
        log(f"model {model}: {cls.name} export (in the {cls.environment} environment)")
        subprocess.run([python_for(cls.environment, log=log), "-m", cls.exporter, "--model", model,
                        "--dir", str(models_dir), "--seed", str(seed)], check=True)

    def __init__(self, model: ModelSpec, artifacts: ModelArtifacts | None = None, **options: Any):
        self.model = model
        self.artifacts = artifacts
        self.options: dict[str, Any] = self.resolve_options(options)
        if self.needs_artifacts and artifacts is None:
            raise ScorerConfigError(f"backend {self.name!r} needs model artifacts "
                                    f"(see serving.models.model_paths / build_model)")
        self._item_shape: tuple[int, ...] = tuple(model.input_shape)
        self._out_shape: tuple[int, ...] = tuple(model.output_shape)
        # One float32 input, one output: the single-tensor hot path, checked inline.
        self._simple = not model.named and model.input_dtype == "float32"
        self._closed = False

    # -- options -----------------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``given`` against :attr:`OPTIONS`: unknown names and bad values raise
        :class:`ScorerConfigError` naming the option; returns every option with defaults filled."""
        unknown = sorted(set(given) - set(cls.OPTIONS))
        if unknown:
            known = ", ".join(sorted(cls.OPTIONS)) or "none"
            raise ScorerConfigError(f"backend {cls.name!r} has no option "
                                    f"{', '.join(map(repr, unknown))}; its options: {known}")
        out: dict[str, Any] = {}
        for key, opt in cls.OPTIONS.items():
            if key in given:
                out[key] = opt.convert(cls.name, key, given[key])
            elif opt.required:
                raise ScorerConfigError(f"backend {cls.name!r}: option {key!r} is required"
                                        + (f" ({opt.help})" if opt.help else ""))
            else:
                out[key] = opt.default
        return out

    # -- scoring -----------------------------------------------------------------------------
    def score(self, x):
        """``x`` ``[b, *model.input_shape]`` of the input's dtype -> ``[b, *model.output_shape]``;
        for a model with several inputs a ``{name: array}`` dict, with several outputs a dict back
        (serving.models.spec)."""
        if not self._simple:
            try:
                return self._score(check_feeds(self.model, x))
            except FeedError as exc:
                raise ScoringError(str(exc)) from None
        try:
            dt = x.dtype
            shape = x.shape
        except AttributeError:
            raise ScoringError(f"{self.model.name}: expected a numpy array, got {type(x).__name__}") from None
        if (dt is not _F32 and dt != _F32) or shape[1:] != self._item_shape or not shape[0]:
            raise ScoringError(f"{self.model.name}: expected float32 [b>=1, "
                               f"{', '.join(map(str, self._item_shape))}], got {dt} {list(shape)}")
        return self._score(x)

    def _score(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def warmup(self, batch_size: int = 1, iterations: int = 3) -> None:
        """Score a zero batch a few times (first-call allocations, lazy init) before measuring."""
        x = self.model.zeros(batch_size)
        for _ in range(iterations):
            self.score(x)

    def describe(self) -> dict[str, Any]:
        """What to record in a run's metadata."""
        return {"backend": self.name, "model": self.model.name, "options": dict(self.options)}

    def close(self) -> None:
        """Release resources. Idempotent; scoring after close raises RuntimeError.

        Subclasses that hold resources release them and then call ``super().close()``.
        """
        self._closed = True
        self._score = self._score_closed  # instance attribute: no per-call "closed?" check

    def _score_closed(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError(f"{type(self).__name__} for {self.model.name!r} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<{type(self).__name__} {self.model.name}{', ' + opts if opts else ''}>"
