"""engine_options of the Faust engine (what each does: sps_workers/faust/__init__.py).

No Faust import here: the runner validates experiment files in the core environment.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sps_workers.options import EngineOptions


class FaustOptions(EngineOptions):
    ENGINE: ClassVar[str] = "faust"

    concurrency: int = Field(1, ge=1, le=64, description="Agent actors per worker process.")
    web_port: int | None = Field(None, ge=1, le=65535, description="Faust web server on 127.0.0.1:port; null = off.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often acked offsets are committed.")
