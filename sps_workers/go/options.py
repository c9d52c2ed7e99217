"""engine_options of the Go engine (what each does: ``__main__``'s docstring).

The Go worker reads the same keys (settings.go, engineOptionKeys) and rejects unknown ones with
the same message; this class lets the runner check them before anything starts.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sps_workers.options import EngineOptions


class GoOptions(EngineOptions):
    ENGINE: ClassVar[str] = "go"

    commit_interval_ms: int = Field(100, ge=0, description="How often each instance commits the input offsets "
                                                           "whose outputs were acknowledged; 0 = after every poll.")
    fetch_max_wait_ms: int = Field(10, ge=10, description="The longest the broker holds a fetch for more data "
                                                        "(fetch.max.wait.ms; franz-go takes 10 at least).")
    warmup_rounds: int = Field(10, ge=0, description="Zero batches each embedded instance scores before joining "
                                                     "the group; 0 = off.")
