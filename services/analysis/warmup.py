"""The warm-up cut (docs/results.md): the first 25 % of records in output order by default (the
paper's rule), or every record created within ``window_s`` seconds of the first creation.
Warm-up records are kept apart and reported under ``warmup``, never dropped."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from services.analysis.columns import as_table, column, take


@dataclass(frozen=True)
class Warmup:
    """One of the two rules: ``fraction`` of the records in output order, or ``window_s`` seconds
    from the first creation (the window wins when both are given)."""

    fraction: float | None = 0.25
    window_s: float | None = None

    def __post_init__(self):
        if self.window_s is not None and self.window_s < 0:
            raise ValueError("warm-up window_s must be >= 0")
        if self.window_s is None and self.fraction is not None and not 0 <= self.fraction < 1:
            raise ValueError("warm-up fraction must be in [0, 1)")

    @property
    def policy(self) -> str:
        return "window" if self.window_s is not None else "fraction"

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "fraction": self.fraction if self.window_s is None else None,
                "window_s": self.window_s}


def warmup_mask(data: pa.Table | Mapping[str, Any], rule: Warmup) -> np.ndarray:
    """Boolean mask of the warm-up rows. Every row counts (whatever its status): warm-up is a
    property of the run's time line.

    * window: rows with ``created_ns < min(created_ns) + window_s``;
    * fraction: the first ``floor(n × fraction)`` rows in output order — ascending
      ``output_append_ms``, ties in row order (the collector's consumption order), rows without an
      output last.
    """
    table = as_table(data)
    n = table.num_rows
    mask = np.zeros(n, dtype=bool)
    if rule.window_s is not None:
        created, ok = column(table, "created_ns")
        if ok.any():
            mask = ok & (created < created[ok].min() + round(rule.window_s * 1e9))
        return mask
    k = math.floor(n * (rule.fraction or 0.0))
    key, ok = column(table, "output_append_ms")
    order = np.argsort(np.where(ok, key, np.iinfo(np.int64).max), kind="stable")
    mask[order[:k]] = True
    return mask


def split_warmup(data: pa.Table | Mapping[str, Any], rule: Warmup) -> tuple[pa.Table, pa.Table]:
    """``(measured, warmup)`` tables, each in the original row order."""
    table = as_table(data)
    m = warmup_mask(table, rule)
    return take(table, ~m), take(table, m)
