"""Read a run folder for the report: summary, manifest, and per repetition the raw files
(batches, lag, resources, generator facts), reduced to what the charts draw.

Kept rows, warm-up and latencies follow docs/results.md exactly: the same row classes as the
summary (:func:`services.analysis.classify`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from services.analysis import Warmup, classify
from services.analysis.columns import column, take

HOPS = ("produce", "wait", "decode", "score", "encode", "publish")


@dataclass
class Run:
    dir: Path
    summary: dict
    manifest: dict

    @property
    def name(self) -> str:
        return self.dir.resolve().name


def load_run(run_dir: Path | str) -> Run:
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no summary.json (not a run folder?)")
    summary = json.loads(path.read_text())
    mpath = run_dir / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    return Run(dir=run_dir, summary=summary, manifest=manifest)


def rep_dirs(run: Run, index: int, point: dict) -> list[Path]:
    """The repetition folders of summary point ``index`` (the folder recorded in the summary, or
    the same ``points/NN-label/rep-K`` under this run folder when the run was moved)."""
    found: list[Path] = []
    for rep in point.get("per_repetition") or [point]:
        d = rep.get("dir")
        if not d:
            continue
        p = Path(d)
        local = run.dir / "points" / p.parent.name / p.name
        for cand in (local, p):
            if cand.is_dir():
                found.append(cand)
                break
    if not found:
        found = sorted(run.dir.glob(f"points/{index:02d}-*/rep-*"), key=lambda q: _rep_no(q.name))
    return found


def _rep_no(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


def point_label(run: Run, index: int, point: dict) -> str:
    dirs = rep_dirs(run, index, point)
    params = point.get("params") or {}
    if dirs:
        name = re.sub(r"^\d+-", "", dirs[0].parent.name)
        if params.get("search") and params.get("rate") is not None:
            rest = re.sub(r"(^search-|rate[\d.]+-?|batch_size\d+-?|parallelism\d+-?)", "", name).strip("-")
            return f"search {float(params['rate']):g}/s" + (f" {rest}" if rest else "")
        return name
    return ", ".join(f"{k}={v}" for k, v in params.items()) or f"point {index}"


def _read(path: Path):
    if not path.exists():
        return None

    try:
        return pq.read_table(path)
    except Exception:  # noqa: BLE001 - a torn file: the chart says "no data"
        return None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Rep:
    """One repetition, reduced: times in seconds from the schedule start ``t0`` (generator t0_ns)."""

    dir: Path
    summary: dict                      # the repetition's own point.json (falls back to the point)
    t0_ns: int | None = None
    latency: np.ndarray = field(default_factory=lambda: np.zeros(0))          # kept rows, ms
    latency_sched: np.ndarray = field(default_factory=lambda: np.zeros(0))    # kept rows with intended, ms
    out_s: np.ndarray = field(default_factory=lambda: np.zeros(0))            # every scored row: output append
    lat_all: np.ndarray = field(default_factory=lambda: np.zeros(0))          # ... its latency, ms
    sched_all: np.ndarray = field(default_factory=lambda: np.zeros(0))        # ... its latency from schedule
    created_s: np.ndarray = field(default_factory=lambda: np.zeros(0))        # every sent row: created
    warmup_end_s: float | None = None
    lag: tuple[np.ndarray, np.ndarray] | None = None
    resources: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    has_batches: bool = False


def load_rep(dir: Path, point: dict) -> Rep:
    summary = _json(dir / "point.json") or point
    gen = _json(dir / "generator.json")
    rep = Rep(dir=dir, summary=summary, t0_ns=gen.get("t0_ns"))
    table = _read(dir / "batches.parquet")
    if table is not None and table.num_rows:
        table = take(table, column(table, "sent")[0])
    if table is not None and table.num_rows:
        rep.has_batches = True
        wu = summary.get("warmup") or {}
        rows = classify(table, Warmup(fraction=wu.get("fraction", 0.25), window_s=wu.get("window_s")))
        kept, scored = rows.kept, rows.scored
        if rep.t0_ns is None:
            rep.t0_ns = int(rows.created_ns[rows.has_created].min()) if rows.has_created.any() else None
        t0 = rep.t0_ns or 0
        rep.latency = rows.latency(kept)
        rep.latency_sched = rows.latency_from_schedule(kept & rows.has_slot)
        rep.out_s = (rows.output_ms[scored] * 1_000_000 - t0) / 1e9
        rep.lat_all = rows.latency(scored)
        sched = np.full(int(scored.sum()), np.nan)
        sched[rows.has_slot[scored]] = rows.latency_from_schedule(scored & rows.has_slot)
        rep.sched_all = sched
        rep.created_s = (rows.created_ns[rows.has_created] - t0) / 1e9
        if rows.warm.any() and kept.any():
            rep.warmup_end_s = (int(rows.output_ms[kept].min()) * 1_000_000 - t0) / 1e9
    lag = _read(dir / "lag.parquet")
    if lag is not None and lag.num_rows and rep.t0_ns is not None:
        t = (np.asarray(lag.column("t_ns"), dtype=np.int64) - rep.t0_ns) / 1e9
        rep.lag = (t, np.asarray(lag.column("lag"), dtype=np.float64))
    res = _read(dir / "resources.parquet")
    if res is not None and res.num_rows and rep.t0_ns is not None:
        d = res.to_pydict()
        t = np.asarray(d["t_s"], dtype=np.float64) - rep.t0_ns / 1e9
        names = np.asarray(d["service"])
        for name in dict.fromkeys(d["service"]):
            m = names == name
            rep.resources[name] = {"t": t[m], "cpu": np.asarray(d["cpu_percent"], dtype=np.float64)[m],
                                   "rss": np.asarray(d["rss_mb"], dtype=np.float64)[m]}
    return rep


def cdf(values: np.ndarray, n: int = 400) -> tuple[list[float], list[float]]:
    """(x, F(x)) at quantiles dense in the tail (enough for p99.9 to show), ending at the max."""
    v = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    if len(v) == 0:
        return [], []
    body = np.linspace(0.0, 0.9, n // 2, endpoint=False)
    tail = 1.0 - np.logspace(-1, -5, n // 2)
    q = np.unique(np.concatenate([body, tail, [1.0]]))
    idx = np.minimum((q * len(v)).astype(np.int64), len(v) - 1)
    x = v[idx]
    y = (idx + 1) / len(v)
    return x.tolist(), y.tolist()


def per_second(t_s: np.ndarray, values: np.ndarray, bin_s: float = 1.0) -> dict[str, list[float]]:
    """Per ``bin_s`` bin of ``t_s``: bin centre, count, median and p99 of ``values`` (NaN skipped)."""
    out: dict[str, list[float]] = {"t": [], "count": [], "p50": [], "p99": []}
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(t) == 0:
        return out
    b = np.floor(t / bin_s).astype(np.int64)
    order = np.argsort(b, kind="stable")
    b, v = b[order], v[order]
    keys, starts = np.unique(b, return_index=True)
    ends = list(starts[1:]) + [len(b)]
    for k, s, e in zip(keys, starts, ends):
        chunk = v[s:e]
        chunk = chunk[np.isfinite(chunk)]
        out["t"].append((k + 0.5) * bin_s)
        out["count"].append(float(e - s))
        out["p50"].append(float(np.median(chunk)) if len(chunk) else math.nan)
        out["p99"].append(float(np.percentile(chunk, 99)) if len(chunk) else math.nan)
    return out


def rate_per_second(t_s: np.ndarray, bin_s: float = 1.0) -> tuple[list[float], list[float]]:
    """Events per second in ``bin_s`` bins (every bin from the first to the last, empty ones 0)."""
    t = np.asarray(t_s, dtype=np.float64)
    t = t[np.isfinite(t)]
    if len(t) == 0:
        return [], []
    lo = math.floor(t.min() / bin_s)
    idx = np.floor(t / bin_s).astype(np.int64) - lo
    counts = np.bincount(idx)
    return [float((lo + k + 0.5) * bin_s) for k in range(len(counts))], [float(c) / bin_s for c in counts]


def get(d: Any, path: str, default: Any = None) -> Any:
    """``get(point, "latency_ms.p99")``."""
    cur = d
    for part in path.split("."):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return default
    return cur


def service_resources(point: dict) -> dict[str, dict]:
    """The per-service entries of a point's ``resources`` (dict-valued keys)."""
    return {k: v for k, v in (point.get("resources") or {}).items() if isinstance(v, dict)}


def hop_medians(point: dict) -> tuple[dict[str, float], str]:
    """Per-hop p50 (ms): from ``hops_traced`` when present, else the stamp medians ``hops_ms``."""
    traced = point.get("hops_traced") or {}
    hm = traced.get("hops_ms") if isinstance(traced, dict) else None
    if hm:
        return {h: (hm.get(h) or {}).get("p50") for h in (*HOPS, "e2e")}, "traced"
    hm = point.get("hops_ms") or {}
    return {h: (hm.get(h) or {}).get("p50") for h in (*HOPS, "e2e") if h in hm}, "stamps"
