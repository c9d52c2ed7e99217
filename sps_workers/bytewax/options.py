"""engine_options of the Bytewax engine (documented in sps_workers/bytewax/__init__.py).

No Bytewax import here: the runner and the core environment's tests validate options too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class BytewaxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers_per_process: int = Field(1, ge=1, le=64, description="Bytewax worker threads per process.")
    epoch_interval_s: float = Field(10.0, gt=0, description="Bytewax epoch length.")


def parse_options(raw: dict | None, parallelism: int = 1) -> BytewaxOptions:
    """BytewaxOptions from engine_options, or ValueError naming the bad field."""
    try:
        opts = BytewaxOptions.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "?"
        if err["type"] == "extra_forbidden":
            known = ", ".join(BytewaxOptions.model_fields)
            raise ValueError(f"engine_options.{field}: unknown option of the bytewax engine (known: {known})") from None
        raise ValueError(f"engine_options.{field}: {err['msg']}") from None
    if parallelism % opts.workers_per_process:
        raise ValueError(f"engine_options.workers_per_process: {opts.workers_per_process} does not divide "
                         f"parallelism {parallelism}")
    return opts
