"""engine_options of the Ray engine (what each does: the package docstring, sps_workers.ray).

No ray import here: the runner validates experiment files in the core environment.
"""

from __future__ import annotations

import os
import re
from typing import ClassVar

from pydantic import Field, field_validator

from crayfish.host.paths import cache_dir
from sps_workers.options import EngineOptions

# Ray's unix sockets live under its temp dir and must stay under ~107 bytes: keep it short.
_HOST_PORT = r"[A-Za-z0-9.\-\[\]:]+:\d+"
LOCAL_ONLY = ("num_cpus", "object_store_mb", "temp_dir")


class RayOptions(EngineOptions):
    ENGINE: ClassVar[str] = "ray"

    address: str | None = Field(None, description="ray://host:port (Ray Client), host:port (the GCS of a cluster "
                                                  "this machine belongs to), 'auto', or null: a fresh local Ray.")
    max_in_flight: int = Field(4, ge=1, description="Poll batches in flight per input actor.")
    num_cpus: int | None = Field(None, ge=1, description="Local Ray's logical CPUs [max(cpu count, mp x "
                                                         "scoring_cpus)].")
    scoring_cpus: float = Field(1.0, ge=0, description="Logical CPUs each scoring actor reserves.")
    object_store_mb: int = Field(256, ge=64, description="Local Ray's object store.")
    temp_dir: str = Field(default_factory=lambda: str(cache_dir("ray")), min_length=1,
                          description="Local Ray's session files (made absolute).")
    stop_timeout_s: float = Field(15.0, gt=0, description="SIGTERM -> drain, commit, close within this.")
    runtime_env: dict = Field(default_factory=dict, description="Ray's runtime_env for the job (py_modules, "
                                                                "working_dir, env_vars, ...).")

    @field_validator("address")
    @classmethod
    def _address(cls, v):
        if v is not None and not (v == "auto" or re.fullmatch(rf"ray://{_HOST_PORT}", v)
                                  or re.fullmatch(_HOST_PORT, v)):
            raise ValueError(f"must be ray://host:port (Ray Client), host:port (the GCS of a cluster this machine "
                             f"belongs to), 'auto', or null for a local Ray (got {v!r})")
        return v

    @field_validator("temp_dir")
    @classmethod
    def _absolute(cls, v):
        if not v.strip():
            raise ValueError("must be a non-empty path")
        return os.path.abspath(v)

    @property
    def local(self) -> bool:
        return self.address is None

    def check(self, parallelism: int) -> RayOptions:
        if not self.local:
            for name in LOCAL_ONLY:
                if name in self.model_fields_set:
                    raise self.error(name, f"only applies to a local Ray (address is {self.address!r}; the "
                                           f"cluster has its own)")
        return self
