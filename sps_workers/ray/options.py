"""The Ray engine's knobs (``WorkerSettings.engine_options``), checked before anything starts.

Pure Python (no ray import): the runner and the core test environment validate configurations
without the ``ray`` environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from crayfish.host.paths import cache_dir
from sps_workers.settings import WorkerSettings

# Ray's unix sockets live under its temp dir and must stay under ~107 bytes: keep it short.


class RayOptionError(ValueError):
    pass


@dataclass(frozen=True)
class RayOptions:
    """Defaults in brackets; see the package docstring (sps_workers.ray) for what each does."""

    address: str | None = None        # [None: a fresh local Ray on 127.0.0.1]
    max_in_flight: int = 4            # poll batches in flight per input actor
    num_cpus: int | None = None       # local Ray's logical CPUs [max(cpu count, mp * scoring_cpus)]
    scoring_cpus: float = 1.0         # logical CPUs each scoring actor reserves
    object_store_mb: int = 256        # local Ray's object store
    temp_dir: str = field(default_factory=lambda: str(cache_dir("ray")))
    stop_timeout_s: float = 15.0      # SIGTERM -> drain, commit, close within this
    runtime_env: dict = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.address is None


KNOWN = tuple(f.name for f in fields(RayOptions))
_HOST_PORT = r"[A-Za-z0-9.\-\[\]:]+:\d+"


def parse_options(settings: WorkerSettings) -> RayOptions:
    """engine_options -> RayOptions; a bad value raises RayOptionError naming the field."""
    raw = dict(settings.engine_options or {})
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise RayOptionError(f"engine_options: unknown key(s) {', '.join(map(repr, unknown))} for engine "
                             f"ray; known: {', '.join(KNOWN)}")

    def bad(name: str, why: str):
        return RayOptionError(f"engine_options.{name}: {why} (got {raw[name]!r})")

    out: dict = {}
    if raw.get("address") is not None:
        a = raw["address"]
        if not isinstance(a, str) or not (a == "auto" or re.fullmatch(rf"ray://{_HOST_PORT}", a)
                                          or re.fullmatch(_HOST_PORT, a)):
            raise bad("address", "must be ray://host:port (Ray Client), host:port (the GCS of a cluster "
                                 "this machine belongs to), 'auto', or null for a local Ray")
        out["address"] = a
    for name, low in (("max_in_flight", 1), ("num_cpus", 1), ("object_store_mb", 64)):
        if raw.get(name) is not None:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad(name, f"must be an integer >= {low}")
            out[name] = v
    for name, strictly_positive in (("scoring_cpus", False), ("stop_timeout_s", True)):
        if name in raw:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (strictly_positive and v == 0):
                raise bad(name, "must be a number " + ("> 0" if strictly_positive else ">= 0"))
            out[name] = float(v)
    if raw.get("temp_dir") is not None:
        if not isinstance(raw["temp_dir"], str) or not raw["temp_dir"].strip():
            raise bad("temp_dir", "must be a non-empty path")
        out["temp_dir"] = os.path.abspath(raw["temp_dir"])
    if "runtime_env" in raw:
        if not isinstance(raw["runtime_env"], dict):
            raise bad("runtime_env", "must be a mapping (Ray's runtime_env: env_vars, py_modules, ...)")
        out["runtime_env"] = dict(raw["runtime_env"])
    opts = RayOptions(**out)
    if not opts.local:
        for name in ("num_cpus", "object_store_mb", "temp_dir"):
            if name in raw:
                raise RayOptionError(f"engine_options.{name}: only applies to a local Ray (address is "
                                     f"{opts.address!r}; the cluster has its own)")
    return opts
