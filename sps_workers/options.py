"""Engine options: ``engine_options`` checked against one class per engine, before anything starts.

Every engine declares its knobs as one subclass of :class:`EngineOptions` in
``sps_workers/<engine>/options.py`` and names that class in its registry entry
(``EngineSpec(options=...)`` in :mod:`sps_workers`). The same class is checked twice:

- by the runner, when an experiment file is validated (``crayfish validate`` and ``crayfish run``,
  every sweep point), so a bad option fails before a broker or a worker starts;
- by the engine's worker when it starts (``read_settings(..., options=<class>)``), for workers started
  by hand or by other tools.

Every problem is one :class:`EngineOptionsError`, a one-line message naming the option (and, for an
unknown key, the engine): ``engine_options.<key>: <what is wrong>``.

Writing an engine's options class
---------------------------------
::

    class MyOptions(EngineOptions):
        ENGINE: ClassVar[str] = "my-engine"          # the name in messages

        batch_ms: int = Field(5, ge=0, description="How long a record may wait for its batch.")

        def check(self, parallelism: int) -> "MyOptions":
            # rules across fields or with the scoring parallelism; fill defaults that depend on it
            if self.batch_ms and parallelism > 8:
                raise self.error("batch_ms", f"must be 0 with parallelism {parallelism} > 8")
            return self

- One field per option, each with a default and a ``description`` (the engine's package docstring
  says more about what it does).
- No import of the engine's own library in that module: the runner validates options in the core
  environment, which does not have Flink, Spark, Ray, Faust or Bytewax.
- Options are strict: no string-to-number or number-to-boolean coercion, unknown keys rejected.
- An engine without knobs declares a subclass with no fields: every key is then unknown.
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class EngineOptionsError(ValueError):
    """A bad engine option. The message is one line: ``engine_options.<key>: <what is wrong>``."""


class EngineOptions(BaseModel):
    """An engine's ``engine_options``, validated: the base of every engine's options class."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ENGINE: ClassVar[str] = ""
    """The engine's registry name, used in messages about unknown keys."""

    CONFORMANCE_OPTIONS: ClassVar[dict] = {}
    """The ``engine_options`` the engine conformance suite runs the engine with (an engine whose
    options have no usable defaults, such as ``command``, names a working example here)."""

    @classmethod
    def parse(cls, raw: dict | None, parallelism: int = 1, engine: str | None = None) -> Self:
        """The options given in ``raw`` (``engine_options``) for a worker of ``parallelism`` instances,
        defaults filled in; :class:`EngineOptionsError` naming the first bad option(s) otherwise."""
        engine = engine or cls.ENGINE or "this"
        try:
            opts = cls.model_validate(raw or {})
        except ValidationError as exc:
            raise EngineOptionsError(_one_line(exc, cls, engine)) from None
        return opts.check(parallelism)

    @classmethod
    def from_settings(cls, settings) -> Self:
        """The options of a WorkerSettings document (its ``engine_options`` and ``parallelism``)."""
        return cls.parse(settings.engine_options, settings.parallelism)

    def check(self, parallelism: int) -> Self:
        """Override for rules across fields or with the scoring ``parallelism``; raise
        ``self.error(option, why)``. Returns the options to use: ``self``, or a copy with the defaults
        that depend on ``parallelism`` filled in (``self.model_copy(update=...)``)."""
        return self

    def readiness(self) -> str | None:
        """``group`` or ``file`` when these options decide how the worker shows it is ready (see
        :meth:`sps_workers.EngineSpec.wait_ready`); ``None``: the engine's registry entry decides."""
        return None

    @staticmethod
    def error(option: str, why: str) -> EngineOptionsError:
        return EngineOptionsError(f"engine_options.{option}: {why}")


def _one_line(exc: ValidationError, cls: type[EngineOptions], engine: str) -> str:
    unknown, parts = [], []
    for err in exc.errors():
        where = "engine_options" + "".join(f".{x}" for x in err["loc"])
        if err["type"] == "extra_forbidden":
            unknown.append(where)
        else:
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    if unknown:
        known = ", ".join(cls.model_fields) or "none"
        plural = "s" if len(unknown) > 1 else ""
        parts.insert(0, f"{', '.join(unknown)}: unknown option{plural} of the {engine} engine (known: {known})")
    return "; ".join(parts)
