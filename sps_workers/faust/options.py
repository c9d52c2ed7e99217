"""engine_options of the Faust engine (documented in sps_workers/faust/__init__.py).

No Faust import here: the runner and the core environment's tests validate options too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class FaustOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(1, ge=1, le=64, description="Agent actors per worker process.")
    web_port: int | None = Field(None, ge=1, le=65535, description="Faust web server on 127.0.0.1:port; null = off.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often acked offsets are committed.")


def parse_options(raw: dict | None) -> FaustOptions:
    """FaustOptions from engine_options, or ValueError naming the bad field."""
    try:
        return FaustOptions.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "?"
        if err["type"] == "extra_forbidden":
            known = ", ".join(FaustOptions.model_fields)
            raise ValueError(f"engine_options.{field}: unknown option of the faust engine (known: {known})") from None
        raise ValueError(f"engine_options.{field}: {err['msg']}") from None
