"""The input batches a run sends: seeded synthetic pools and replayed recordings.

Every part of the system that needs the run's inputs rebuilds them from the same few numbers, so
they are never shipped around: the generator sends them, the collector's prediction checker
recomputes the reference output of a sampled batch from its sequence number, and the Flink
standalone job feeds them without Kafka. All of it is pure, seeded and Kafka-free.

- :func:`input_pool`: the pool of distinct batches of a run (synthetic or replayed); batch
  ``seq`` of the run carries ``pool[seq % len(pool)]``. Built before the timed path.
  :func:`named_input_pool`: the same for a model with named inputs, each entry ``{name: array}``.
- :func:`synthetic_pool`: a seeded ``(pool_size, batch_size, *item_shape)`` array;
  :func:`cycle_pool` walks it endlessly.
- :func:`load_replay`: recorded data points (rows along axis 0) from a ``.npy`` / ``.npz`` file;
  :func:`replay_batch` / :func:`iter_replay_batches` cut them into batches of ``batch_size`` rows,
  wrapping around cyclically. (The *timing* of a replay workload is a constant-rate schedule, see
  services.generator.schedules; recorded timestamps, if a file has any, are not used.)

Adding a payload source: give it a function here that returns the batches (numpy arrays of the
run's dtype, ``batch_size`` rows each), and a branch in :func:`input_pool`, so that the generator,
the checker and the standalone job all get it at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["input_pool", "named_input_pool", "synthetic_pool", "cycle_pool", "load_replay", "replay_batch", "iter_replay_batches"]


def input_pool(item_shape: Sequence[int], dtype: Any, batch_size: int, pool_size: int, seed: int,
               replay_path: str | Path | None = None, replay_key: str | None = None) -> list[np.ndarray]:
    """The distinct input batches of a run, each a C-contiguous ``(batch_size, *item_shape)`` array.

    Synthetic (no ``replay_path``): ``pool_size`` batches of :func:`synthetic_pool`. Replay: the
    file's rows cast to ``dtype`` (reshaped to ``item_shape`` when the sizes allow), cut into
    ``ceil(rows / batch_size)`` batches, the last one wrapping around to the first rows.
    """
    if replay_path is None:
        pool = synthetic_pool(tuple(item_shape), dtype, batch_size, pool_size, seed)
        return [np.ascontiguousarray(pool[i]) for i in range(len(pool))]
    data = load_replay(replay_path, replay_key).astype(dtype, copy=False)
    item = tuple(item_shape)
    if data.size % math.prod(item) == 0:
        data = data.reshape((-1,) + item)
    return [np.ascontiguousarray(replay_batch(data, batch_size, k))
            for k in range(math.ceil(len(data) / batch_size))]


def named_input_pool(tensors: Sequence[Any], batch_size: int, pool_size: int, seed: int,
                     replay_path: str | Path | None = None) -> list[dict[str, np.ndarray]]:
    """The distinct input batches of a model with named inputs: each entry ``{name: array}``.

    ``tensors``: per input ``name``, ``shape`` (one item), ``dtype``, and for the synthetic values
    ``low`` / ``high`` (integers in [low, high); None: the :func:`synthetic_pool` default) and
    ``fill`` (``"ones"``: every value 1, e.g. attention masks). Input ``i`` is drawn with seed
    ``seed + i``. Replay: a ``.npz`` with one array per input name (rows along axis 0); batches
    are cut as in :func:`input_pool`, by the longest array.
    """
    if replay_path is not None:
        arrays = {t.name: load_replay(replay_path, t.name).astype(t.dtype, copy=False) for t in tensors}
        for t in tensors:
            item = tuple(t.shape)
            if arrays[t.name].size % max(1, math.prod(item)) == 0:
                arrays[t.name] = arrays[t.name].reshape((-1,) + item)
        n = max(len(a) for a in arrays.values())
        return [{k: np.ascontiguousarray(replay_batch(a, batch_size, i)) for k, a in arrays.items()}
                for i in range(math.ceil(n / batch_size))]
    pools = {}
    for i, t in enumerate(tensors):
        if t.fill == "ones":
            pools[t.name] = np.ones((pool_size, batch_size, *t.shape), dtype=t.dtype)
        else:
            rng = None if t.low is None else (t.low, t.high)
            pools[t.name] = synthetic_pool(tuple(t.shape), t.dtype, batch_size, pool_size, seed + i, rng)
    return [{k: np.ascontiguousarray(p[j]) for k, p in pools.items()} for j in range(pool_size)]


# --------------------------------------------------------------------------------------
# Synthetic tensors
# --------------------------------------------------------------------------------------


def synthetic_pool(shape_per_item: Sequence[int], dtype: Any, batch_size: int,
                   pool_size: int, seed: int = 0,
                   int_range: tuple[int, int] | None = None) -> np.ndarray:
    """Seeded pool of ready-made batches, shape ``(pool_size, batch_size, *shape_per_item)``.

    Build it before the timed path and reuse batches cyclically (``pool[i % pool_size]``
    or :func:`cycle_pool`). Values:

    * floating dtypes: uniform in [0, 1);
    * integer dtypes: uniform integers in ``[low, high)`` = ``int_range``; default
      ``[0, min(256, dtype max + 1))`` (byte-like values, valid as small indices);
    * bool: fair coin.

    The same arguments give the same pool.
    """
    dt = np.dtype(dtype)
    shape = (int(pool_size), int(batch_size), *[int(s) for s in shape_per_item])
    if pool_size < 1 or batch_size < 1 or any(s < 0 for s in shape[2:]):
        raise ValueError("pool_size and batch_size must be >= 1, item dims >= 0")
    rng = np.random.default_rng(seed)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape, dtype=np.uint8).astype(np.bool_)
    if np.issubdtype(dt, np.floating):
        if dt in (np.float32, np.float64):
            return rng.random(size=shape, dtype=dt)
        # float16 etc: draw float32 and keep strictly below 1 after the cast
        x = rng.random(size=shape, dtype=np.float32).astype(dt)
        return np.minimum(x, np.nextafter(dt.type(1), dt.type(0)))
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        if int_range is None:
            low, high = 0, min(256, int(info.max) + 1)
        else:
            low, high = int(int_range[0]), int(int_range[1])
        if not (info.min <= low < high <= int(info.max) + 1):
            raise ValueError(f"int_range {low, high} invalid for {dt}")
        return rng.integers(low, high, size=shape, dtype=dt, endpoint=False)
    raise TypeError(f"unsupported dtype for synthetic data: {dt}")


def cycle_pool(pool: np.ndarray, start: int = 0) -> Iterator[np.ndarray]:
    """Endless iterator over ``pool[start], pool[start+1], …`` wrapping at len(pool)."""
    n = len(pool)
    i = start % n
    while True:
        yield pool[i]
        i = (i + 1) % n


# --------------------------------------------------------------------------------------
# Replay data
# --------------------------------------------------------------------------------------


def load_replay(path: str | Path, key: str | None = None) -> np.ndarray:
    """Load replay data points: a ``.npy`` array, one array of a ``.npz`` archive or one column
    of a Parquet file (``key`` names it; None takes the first one stored). Rows (axis 0) are data
    points. Pickled object arrays are refused (allow_pickle=False)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        arr = _parquet_column(p, key)
    elif suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if not z.files:
                raise ValueError(f"{p}: empty .npz archive")
            name = z.files[0] if key is None else key
            if name not in z.files:
                raise KeyError(f"{p}: no array {name!r} (has {z.files})")
            arr = z[name]
    else:
        raise ValueError(f"replay file must be .npy, .npz or .parquet: {p}")
    arr = np.asarray(arr)
    if arr.ndim == 0 or len(arr) == 0:
        raise ValueError(f"{p}: replay data needs at least one row")
    return arr


def _parquet_column(p: Path, key: str | None) -> np.ndarray:
    """One column as ``(rows, ...)``: list cells (nested or fixed-size) flattened into the row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = pq.read_schema(p).names
    name = names[0] if key is None else key
    if name not in names:
        raise KeyError(f"{p}: no column {name!r} (has {names})")
    col = pq.read_table(p, columns=[name]).column(0).combine_chunks()
    rows = len(col)
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.flatten()
    flat = col.to_numpy(zero_copy_only=False)
    return flat if flat.size == rows else flat.reshape(rows, -1)


def replay_batch(data: np.ndarray, batch_size: int, index: int) -> np.ndarray:
    """Batch number ``index``: rows ``index·batch_size … index·batch_size+batch_size−1``
    of ``data`` modulo len(data) (cyclic), shape (batch_size, *data.shape[1:])."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(data)
    start = (index * batch_size) % n
    if start + batch_size <= n:
        return data[start:start + batch_size]
    return np.take(data, np.arange(start, start + batch_size), axis=0, mode="wrap")


def iter_replay_batches(data: np.ndarray, batch_size: int, start: int = 0) -> Iterator[np.ndarray]:
    """Endless iterator of batches of ``batch_size`` rows, cycling through ``data``
    (the row after the last is the first); batch k equals ``replay_batch(data, batch_size, start + k)``."""
    i = start
    while True:
        yield replay_batch(data, batch_size, i)
        i += 1
