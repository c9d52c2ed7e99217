"""engine_options of the Bytewax engine (what each does: sps_workers/bytewax/__init__.py).

No Bytewax import here: the runner validates experiment files in the core environment.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sps_workers.options import EngineOptions


class BytewaxOptions(EngineOptions):
    ENGINE: ClassVar[str] = "bytewax"

    workers_per_process: int = Field(1, ge=1, le=64, description="Bytewax worker threads per process; must "
                                                                 "divide parallelism.")
    epoch_interval_s: float = Field(10.0, gt=0, description="Bytewax epoch length.")

    def check(self, parallelism: int) -> BytewaxOptions:
        if parallelism % self.workers_per_process:
            raise self.error("workers_per_process", f"{self.workers_per_process} does not divide "
                                                    f"parallelism {parallelism}")
        return self
