"""How requests reach the scorer instances of one model without batching: :class:`DirectPool`
(a request takes a free instance or waits, FIFO, for one), over the shared :class:`Pool` base
(the scorers and the counters) and :class:`ScoreResult`. Dynamic batching is the other strategy:
:mod:`serving.core.batching`. Semantics: :mod:`serving.core`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from crayfish.tensor import feed_rows

from serving.embedded import Scorer, ScoringError
from serving.errors import (
    BackendError,
    BadInputError,
    DeadlineExceededError,
    OverloadedError,
    ServingError,
    UnavailableError,
)
from serving.models.spec import ModelSpec

log = logging.getLogger("serving.core")

_now_ns = time.perf_counter_ns
_mono = time.monotonic


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One answered request.

    ``output``: float32 ``[b, *spec.output_shape]``, exactly the caller's rows. ``inference_ns``:
    the backend call that produced it (with batching: the whole batch's call). ``queue_ns``:
    from arrival in the core to the start of that call. ``instance``: index of the instance
    that scored it. ``batch_rows``: rows of that backend call (== own rows without batching).
    """

    output: np.ndarray | dict
    inference_ns: int
    queue_ns: int
    backend: str
    instance: int
    batch_rows: int


_STAT_KEYS = ("requests", "completed", "rows", "backend_calls", "rejected_overloaded",
              "deadline_exceeded", "bad_input", "backend_errors", "max_batch_rows",
              "peak_busy_instances", "peak_in_flight")


def backend_error(model: str, backend: str, exc: Exception) -> ServingError:
    if isinstance(exc, ScoringError):
        return BadInputError(str(exc))
    log.error("model %r on backend %r failed", model, backend, exc_info=exc)
    return BackendError(f"model {model!r} on backend {backend!r} failed: {type(exc).__name__}: {exc}")


class Pool:
    """Scorers of one model plus the counters; subclasses decide how requests reach them."""

    def __init__(self, name: str, spec: ModelSpec, backend: str, scorers: list[Scorer],
                 max_queue: int):
        self.spec = spec
        # One float32 input, not a dict: checked inline in ScoringCore.score (the hot path).
        self.simple = not spec.multi_input and spec.input_dtype == "float32"
        self.name = name
        self.backend = backend
        self.scorers = scorers
        self.max_queue = max_queue
        self.lock = threading.Lock()
        self.closed = False
        self.stats = dict.fromkeys(_STAT_KEYS, 0)
        self.in_flight = 0  # admitted requests not answered yet (queued or scoring), all callers
        self.request_rows: dict[int, int] = {}  # batch dimension of each request -> how many

    def score(self, x: np.ndarray, deadline: float | None) -> ScoreResult:  # pragma: no cover
        raise NotImplementedError

    def queue_depth(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def busy(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def close(self, timeout: float) -> None:  # pragma: no cover
        raise NotImplementedError

    def _deadline_error(self, waited_ns: int, where: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"model {self.name!r}: deadline passed after {waited_ns / 1e6:.1f} ms {where}")

    def _close_scorers(self) -> None:
        for s in self.scorers:
            try:
                s.close()
            except Exception:  # pragma: no cover - closing must not stop the others
                log.exception("closing a %s scorer for %r", self.backend, self.name)


class _Waiter:
    __slots__ = ("event", "idx")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.idx: int | None = None


class DirectPool(Pool):
    """No batching: a request takes a free instance or waits (FIFO hand-off) for one."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.free: list[int] = list(range(len(self.scorers)))[::-1]
        self.waiters: deque[_Waiter] = deque()

    def queue_depth(self) -> int:
        return len(self.waiters)

    def busy(self) -> int:
        return len(self.scorers) - len(self.free)

    def score(self, x: np.ndarray, deadline: float | None) -> ScoreResult:
        arrive = _now_ns()
        stats = self.stats
        with self.lock:
            if self.closed:
                raise UnavailableError(f"model {self.name!r}: the server is shutting down")
            stats["requests"] += 1
            if self.free and not self.waiters:
                idx = self.free.pop()
                w = None
                busy = len(self.scorers) - len(self.free)
                if busy > stats["peak_busy_instances"]:
                    stats["peak_busy_instances"] = busy
            else:
                if len(self.waiters) >= self.max_queue:
                    stats["rejected_overloaded"] += 1
                    raise OverloadedError(
                        f"model {self.name!r}: {len(self.waiters)} requests already wait for "
                        f"{len(self.scorers)} busy instance(s) (max_queue={self.max_queue}); "
                        f"retry later")
                w = _Waiter()
                self.waiters.append(w)
        if w is not None:
            idx = self._wait(w, deadline, arrive)
        try:
            start = _now_ns()
            if deadline is not None and _mono() >= deadline:
                with self.lock:
                    stats["deadline_exceeded"] += 1
                raise self._deadline_error(start - arrive, "waiting for a free instance")
            try:
                out = self.scorers[idx]._score(x)
            except Exception as exc:
                err = backend_error(self.name, self.backend, exc)
                with self.lock:
                    stats["bad_input" if isinstance(err, BadInputError) else "backend_errors"] += 1
                raise err from exc
            end = _now_ns()
        finally:
            self._release(idx)
        rows = feed_rows(x)
        with self.lock:
            stats["completed"] += 1
            stats["backend_calls"] += 1
            stats["rows"] += rows
            if rows > stats["max_batch_rows"]:
                stats["max_batch_rows"] = rows
        return ScoreResult(out, end - start, start - arrive, self.backend, idx, rows)

    def _wait(self, w: _Waiter, deadline: float | None, arrive: int) -> int:
        if deadline is None:
            w.event.wait()
        else:
            remaining = deadline - _mono()
            if remaining > 0:
                w.event.wait(remaining)
        with self.lock:
            idx = w.idx
            if idx is None:
                if self.closed:
                    raise UnavailableError(f"model {self.name!r}: the server is shutting down")
                # timed out before an instance was handed over
                self.waiters.remove(w)
                self.stats["deadline_exceeded"] += 1
                raise self._deadline_error(_now_ns() - arrive, "waiting for a free instance")
        return idx

    def _release(self, idx: int) -> None:
        with self.lock:
            if self.waiters:
                w = self.waiters.popleft()
                w.idx = idx
                w.event.set()
            else:
                self.free.append(idx)

    def close(self, timeout: float) -> None:
        with self.lock:
            self.closed = True
            for w in self.waiters:
                w.event.set()  # idx stays None: they raise UnavailableError
            self.waiters.clear()
        end = _mono() + timeout
        while _mono() < end:  # let running calls finish before their scorer goes away
            with self.lock:
                if len(self.free) == len(self.scorers):
                    break
            time.sleep(0.005)
        self._close_scorers()


__all__ = ["ScoreResult", "Pool", "DirectPool", "backend_error"]
