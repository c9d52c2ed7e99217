"""Column access for the analysis: every function takes a pyarrow Table (the collector's
``batches.parquet``) or a mapping of equal-length arrays, which :func:`as_table` turns into one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa



def as_table(data: pa.Table | Mapping[str, Any]) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.table(dict(data))


def column(table: pa.Table, name: str, *, default: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)`` of column ``name``.

    Nulls and non-finite floats are invalid; their value is 0 (numbers), "" (strings) or False.
    Integer columns stay int64, so ns timestamps keep full precision. A missing column is
    ``default`` on every row (all valid), or a KeyError when no default is given.
    """
    n = table.num_rows
    if name not in table.column_names:
        if default is None:
            raise KeyError(f"column {name!r} missing")
        return np.full(n, default), np.ones(n, dtype=bool)
    col = table.column(name)
    valid = col.is_valid().to_numpy()
    kind = col.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return col.fill_null("").to_numpy(), valid
    if pa.types.is_boolean(kind):
        return col.fill_null(False).to_numpy(), valid
    if pa.types.is_integer(kind):
        return col.cast(pa.int64()).fill_null(0).to_numpy(), valid
    if pa.types.is_floating(kind):
        vals = col.cast(pa.float64()).to_numpy()   # nulls become NaN
        valid = np.isfinite(vals)
        return np.where(valid, vals, 0.0), valid
    raise TypeError(f"column {name!r} has type {kind}, not a string, bool, integer or float")


def take(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """Rows where ``mask`` (a bool array) is True, in row order."""
    return table.filter(pa.array(mask))


def present(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, present)`` of a stamp column: present = valid and not 0 (an absent stamp is 0, the
    protobuf default, or null); a missing column is absent on every row."""
    values, valid = column(table, name, default=0)
    return values, valid & (values != 0)
