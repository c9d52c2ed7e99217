"""Dynamic batching, the second pool strategy (:class:`BatchingPool`): a queue per model, one
batcher thread per instance; one batch forms at a time. Semantics: :mod:`serving.core`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from crayfish.tensor import concat_feeds, feed_rows, slice_feeds

from serving.core.pools import Pool, ScoreResult, backend_error
from serving.embedded import Scorer
from serving.errors import (
    BadInputError,
    OverloadedError,
    ServingError,
    UnavailableError,
)
from serving.models.spec import ModelSpec

_now_ns = time.perf_counter_ns
_mono = time.monotonic


class _Pending:
    __slots__ = ("x", "rows", "arrive", "deadline", "event", "taken", "result", "error")

    def __init__(self, x: np.ndarray, deadline: float | None):
        self.x = x
        self.rows = feed_rows(x)
        self.arrive = _now_ns()
        self.deadline = deadline
        self.event = threading.Event()
        self.taken = False
        self.result: ScoreResult | None = None
        self.error: BaseException | None = None


class BatchingPool(Pool):
    """Dynamic batching: a queue per model, one batcher thread per instance (see module doc)."""

    def __init__(self, name: str, spec: ModelSpec, backend: str, scorers: list[Scorer],
                 max_queue: int, max_batch_size: int, max_queue_delay_us: int):
        super().__init__(name, spec, backend, scorers, max_queue)
        self.max_batch_size = max_batch_size
        self.delay_ns = max_queue_delay_us * 1000
        self.cond = threading.Condition(self.lock)
        self.queue: deque[_Pending] = deque()
        self.gather_lock = threading.Lock()  # one batch forms at a time
        self.running = 0  # batches in their backend call right now
        self.threads = [threading.Thread(target=self._batcher, args=(i,), daemon=True,
                                         name=f"batcher-{name}-{i}")
                        for i in range(len(scorers))]
        for t in self.threads:
            t.start()

    def queue_depth(self) -> int:
        return len(self.queue)

    def busy(self) -> int:
        return self.running

    def score(self, x: np.ndarray, deadline: float | None) -> ScoreResult:
        p = _Pending(x, deadline)
        with self.cond:
            if self.closed:
                raise UnavailableError(f"model {self.name!r}: the server is shutting down")
            self.stats["requests"] += 1
            if len(self.queue) >= self.max_queue:
                self.stats["rejected_overloaded"] += 1
                raise OverloadedError(
                    f"model {self.name!r}: {len(self.queue)} requests already queued for a batch "
                    f"(max_queue={self.max_queue}); retry later")
            self.queue.append(p)
            self.cond.notify()
        if deadline is None:
            p.event.wait()
        else:
            remaining = deadline - _mono()
            if not (remaining > 0 and p.event.wait(remaining)):
                with self.cond:
                    if not p.taken:
                        self.queue.remove(p)
                        p.taken = True
                        self.stats["deadline_exceeded"] += 1
                        raise self._deadline_error(_now_ns() - p.arrive, "queued for a batch")
                p.event.wait()  # already in a running batch: its answer is on the way
        if p.error is not None:
            raise p.error
        return p.result  # type: ignore[return-value]

    # -- batcher side --------------------------------------------------------------------------
    def _batcher(self, idx: int) -> None:
        while True:
            with self.gather_lock:
                batch = self._gather()
            if batch is None:
                return
            if batch:
                self._run(idx, batch)

    def _take(self, p: _Pending, now: float, batch: list[_Pending]) -> int:
        """Move ``p`` (just popped) into ``batch`` unless its deadline passed; returns rows added."""
        p.taken = True
        if p.deadline is not None and now >= p.deadline:
            self.stats["deadline_exceeded"] += 1
            p.error = self._deadline_error(_now_ns() - p.arrive, "queued for a batch")
            p.event.set()
            return 0
        batch.append(p)
        return p.rows

    def _gather(self) -> list[_Pending] | None:
        q = self.queue
        with self.cond:
            while not q and not self.closed:
                self.cond.wait()
            if self.closed:
                for p in q:
                    p.taken = True
                    p.error = UnavailableError(f"model {self.name!r}: the server is shutting down")
                    p.event.set()
                q.clear()
                return None
            batch: list[_Pending] = []
            first = q.popleft()
            rows = self._take(first, _mono(), batch)
            until = first.arrive + self.delay_ns
            limit = self.max_batch_size
            while rows < limit and not self.closed:
                if q:
                    if rows + q[0].rows > limit and batch:
                        break
                    rows += self._take(q.popleft(), _mono(), batch)
                    continue
                remaining = until - _now_ns()
                if remaining <= 0:
                    break
                self.cond.wait(remaining / 1e9)
            return batch

    def _run(self, idx: int, batch: list[_Pending]) -> None:
        with self.lock:
            self.running += 1
            if self.running > self.stats["peak_busy_instances"]:
                self.stats["peak_busy_instances"] = self.running
        t_batch = _now_ns()
        total = 0
        for p in batch:
            total += p.rows
        err: ServingError | None = None
        try:
            x = concat_feeds([p.x for p in batch])
            t0 = _now_ns()
            out = self.scorers[idx]._score(x)
            t1 = _now_ns()
            if feed_rows(out) != total:
                raise RuntimeError(f"backend returned {feed_rows(out)} rows for a batch of {total}")
        except Exception as exc:
            err = backend_error(self.name, self.backend, exc)
        if err is None:
            inference = t1 - t0
            off = 0
            for p in batch:
                p.result = ScoreResult(slice_feeds(out, off, off + p.rows), inference, t_batch - p.arrive,
                                       self.backend, idx, total)
                off += p.rows
        with self.lock:
            self.running -= 1
            s = self.stats
            s["backend_calls"] += 1
            if err is None:
                s["completed"] += len(batch)
                s["rows"] += total
                if total > s["max_batch_rows"]:
                    s["max_batch_rows"] = total
            else:
                s["bad_input" if isinstance(err, BadInputError) else "backend_errors"] += len(batch)
        for p in batch:
            if err is not None:
                p.error = err
            p.event.set()

    def close(self, timeout: float) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        end = _mono() + timeout
        for t in self.threads:
            t.join(max(0.0, end - _mono()))
        self._close_scorers()


__all__ = ["BatchingPool"]
