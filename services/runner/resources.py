"""CPU and memory of every service of a point, sampled while the point runs.

A :class:`ResourceSampler` thread in the runner samples, every ``interval_s`` (0.5 s), each service
process tree the orchestrator started (the process and all its children, recursively): the worker,
the collector, the generator (from when it starts), an external model server, and the Kafka broker
when the run started it. It writes ``resources.parquet`` into the repetition folder:

    t_s          float64  Unix time of the sample, seconds (the clock of lag.parquet's t_ns / 1e9)
    service      string   the service name (= OTEL_SERVICE_NAME: kafka-worker, collector, ...)
    cpu_percent  float64  CPU time (user + system, summed over the tree) used since the previous
                          sample ÷ wall time since then × 100; one full core = 100, so a tree can
                          exceed 100 on several cores
    rss_mb       float64  resident set size summed over the tree, MiB (shared pages count once per
                          process, so this is an upper bound)
    processes    int64    processes in the tree at that sample

The first sighting of a service only sets its baseline (no row); a service that has exited (a
zombie not reaped yet) gives no row. A process that appears in a
tree after the previous sample counts with all its CPU time; one that ends between samples loses
the time since the previous sample (sampling cannot see it).

:func:`resource_summary` reduces the file to ``{service: {cpu_mean_pct, cpu_max_pct, rss_max_mb,
samples}}`` (summary.json ``resources``; docs/results.md).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from serving.server import RunningServer

INTERVAL_S = 0.5
FILE_NAME = "resources.parquet"
BROKER_NAME = "kafka-broker"


def descendants(pid: int) -> list[int]:
    """Child pids of ``pid``, recursively: from /proc/PID/task/TID/children on Linux (cheap: no scan
    of every process), else psutil's process-table walk."""

    if not os.path.isdir(f"/proc/{pid}/task"):
        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


class _Tree:
    """CPU bookkeeping of one service's process tree between samples."""

    def __init__(self, name: str, pid: int):
        self.name, self.pid = name, pid
        self.procs: dict[tuple[int, float], psutil.Process] = {}
        self.last_cpu: dict[tuple[int, float], float] = {}
        self.last_t: float | None = None
        self._last_wall = 0.0

    def sample(self, now_mono: float) -> tuple[float, float, int] | None:
        """-> (cpu_percent, rss_mb, processes), or None on the first sighting / when gone."""
        found = []
        for pid in (self.pid, *descendants(self.pid)):
            try:
                found.append(psutil.Process(pid))
            except psutil.Error:
                if pid == self.pid:
                    return None
        cpu_now: dict[tuple[int, float], float] = {}
        rss = 0
        for p in found:
            try:
                key = (p.pid, p.create_time())
                proc = self.procs.setdefault(key, p)  # keep one Process object per process
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not reaped yet: nothing to measure
                        if p.pid == self.pid:
                            return None
                        continue
                    t = proc.cpu_times()
                    mem = proc.memory_info()
                cpu_now[key] = t.user + t.system
                rss += mem.rss
            except psutil.Error:
                continue
        first = self.last_t is None
        delta = 0.0
        if not first:
            for key, cpu in cpu_now.items():
                if key in self.last_cpu:
                    delta += max(0.0, cpu - self.last_cpu[key])
                elif key[1] >= self._last_wall - 0.05:  # born since the previous sample
                    delta += cpu
        wall = now_mono - self.last_t if not first else 0.0
        self.last_cpu = cpu_now
        self.procs = {k: v for k, v in self.procs.items() if k in cpu_now}
        self.last_t = now_mono
        self._last_wall = time.time()
        if first or wall <= 0:
            return None
        return 100.0 * delta / wall, rss / 2**20, len(cpu_now)


class ResourceSampler:
    """Samples the process trees of ``services`` (a list the orchestrator keeps appending to: each
    item has ``name`` and ``proc.pid``) plus ``extra`` (name -> pid) every ``interval_s``."""

    def __init__(self, out_dir: Path, services: list, broker: Any = None, interval_s: float = INTERVAL_S):
        self.out_dir = Path(out_dir)
        self.services = services
        self.extra: dict[str, int] = {}
        if broker is not None and getattr(broker, "pid", None):
            self.extra[BROKER_NAME] = int(broker.pid)
        self.interval_s = interval_s
        self.rows: list[tuple[float, str, float, float, int]] = []
        self._trees: dict[str, _Tree] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, server: RunningServer | None = None) -> "ResourceSampler":
        """Start sampling; ``server``: the point's external model server, if the runner started one."""
        if server is not None and server.service is not None:
            self.extra[server.service.name] = server.service.proc.pid
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def _targets(self) -> dict[str, int]:
        found = {}
        for s in list(self.services):
            if s.alive():
                found[s.name] = s.proc.pid
        return {**found, **self.extra}

    def sample_once(self) -> None:
        now = time.monotonic()
        wall = time.time()
        for name, pid in self._targets().items():
            tree = self._trees.get(name)
            if tree is None or tree.pid != pid:
                tree = self._trees[name] = _Tree(name, pid)
            got = tree.sample(now)
            if got is not None:
                self.rows.append((wall, name, got[0], got[1], got[2]))

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - sampling is best effort; the point goes on
                pass
            next_t += self.interval_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> Path | None:
        """Stop sampling (call before the services stop) and write resources.parquet. Safe to call
        when never started or twice."""
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        return self.write()

    def write(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cols = list(zip(*self.rows)) if self.rows else [[], [], [], [], []]
        table = pa.table({"t_s": pa.array(cols[0], pa.float64()), "service": pa.array(cols[1], pa.string()),
                          "cpu_percent": pa.array(cols[2], pa.float64()),
                          "rss_mb": pa.array(cols[3], pa.float64()),
                          "processes": pa.array(cols[4], pa.int64())})
        path = self.out_dir / FILE_NAME
        pq.write_table(table, path)
        return path


def resource_summary(point_dir: Path) -> dict[str, dict]:
    """``{service: {cpu_mean_pct, cpu_max_pct, rss_max_mb, samples}}`` of a repetition folder's
    resources.parquet ({} when there is none)."""

    path = Path(point_dir) / FILE_NAME
    if not path.exists():
        return {}
    t = pq.read_table(path).to_pydict()
    out: dict[str, dict] = {}
    names = t["service"]
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        cpu = np.asarray([t["cpu_percent"][i] for i in idx], dtype=np.float64)
        rss = np.asarray([t["rss_mb"][i] for i in idx], dtype=np.float64)
        out[name] = {"cpu_mean_pct": float(cpu.mean()), "cpu_max_pct": float(cpu.max()),
                     "rss_max_mb": float(rss.max()), "samples": len(idx)}
    return out
