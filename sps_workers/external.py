"""Calling an external model server from a worker: blocking, pipelined or micro-batched.

Engine-agnostic: an engine feeds prepared batches (ScoringOperator.prepare) in, and gets finished
records (output or dead letter) back through ``emit(prepared, op_result)``; it calls ``poll()``
regularly and ``drain()`` before committing on shutdown/rebalance.

Call modes:
- ``blocking`` (the paper's design): one call at a time; the worker waits for each answer.
- ``pipelined`` (the asynchronous I/O the paper left out): up to ``max_in_flight`` calls
  outstanding; answers may come back out of order (offsets are still committed in order).
- ``microbatch`` (the paper's §7.1 advice): up to ``microbatch_max`` DataBatches taken from one
  poll are concatenated into one call, split again on the way back; pipelined as above.

Every call has a deadline (the client's timeout). Retriable failures (overloaded, unavailable,
deadline exceeded) are retried with exponential backoff up to ``retries`` times; after the last
attempt the batch goes to the dead-letter topic with the server's error, and the run continues.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from crayfish.tensor import concat_feeds, feed_rows, slice_feeds
from observability.light import client_traceparent
from serving.errors import (
    BadInputError,
    DeadlineExceededError,
    ModelNotFoundError,
    OverloadedError,
    ServingError,
    UnavailableError,
)
from sps_workers.scoring_op import (
    BAD_SHAPE,
    SCORING_ERROR,
    UNKNOWN_MODEL,
    OpResult,
    Prepared,
    ScoringOperator,
)

CALL_MODES = ("blocking", "pipelined", "microbatch")


@dataclass
class _Unit:
    """One server call: one prepared batch, or several concatenated (micro-batch)."""

    preps: list[Prepared]
    attempts: int = 0
    started: int = 0
    rows: list[int] = field(default_factory=list)

    def x(self) -> np.ndarray:
        if len(self.preps) == 1:
            return self.preps[0].x
        self.rows = [feed_rows(p.x) for p in self.preps]
        return concat_feeds([p.x for p in self.preps])


class ExternalStage:
    def __init__(self, op: ScoringOperator, client, emit: Callable[[Prepared, OpResult], None],
                 mode: str = "blocking", max_in_flight: int = 8, microbatch_max: int = 8,
                 retries: int = 2, backoff_s: float = 0.05):
        if mode not in CALL_MODES:
            raise ValueError(f"call mode {mode!r}; known: {', '.join(CALL_MODES)}")
        self.op, self.client, self.emit = op, client, emit
        self.mode = mode
        self.max_in_flight = 1 if mode == "blocking" else max_in_flight
        self.microbatch_max = microbatch_max if mode == "microbatch" else 1
        self.retries, self.backoff_s = retries, backoff_s
        self.in_flight = 0
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._retry: list = []  # heap of (ready_at, seq, unit)
        self._seq = itertools.count()
        self.calls = 0
        self.failures = 0

    # -- engine side --------------------------------------------------------------------------
    def submit(self, preps: list[Prepared]) -> None:
        """Score these batches (in this order of intake)."""
        for i in range(0, len(preps), self.microbatch_max):
            self._start(_Unit(preps[i:i + self.microbatch_max]))

    def poll(self, timeout_s: float = 0.0) -> None:
        """Deliver finished calls and restart due retries; waits up to ``timeout_s`` for one."""
        self._restart_due()
        try:
            unit, result, exc = self._done.get(timeout=timeout_s) if timeout_s > 0 else self._done.get_nowait()
        except queue.Empty:
            return
        self._complete(unit, result, exc)
        while True:
            try:
                unit, result, exc = self._done.get_nowait()
            except queue.Empty:
                break
            self._complete(unit, result, exc)

    def drain(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (self.in_flight or self._retry) and time.monotonic() < deadline:
            self.poll(0.05)

    # -- internals ----------------------------------------------------------------------------
    def _start(self, unit: _Unit) -> None:
        while self.in_flight >= self.max_in_flight:
            self.poll(0.5)
        unit.attempts += 1
        unit.started = time.perf_counter_ns()
        self.in_flight += 1
        self.calls += 1
        x = unit.x()
        traced = next((p.trace for p in unit.preps if p.trace is not None), None)
        tp = client_traceparent(traced) if traced is not None else None  # the score span
        if self.mode == "blocking":
            try:
                res, exc = self.client.score(x, tp), None
            except Exception as e:  # noqa: BLE001 - judged in _complete
                res, exc = None, e
            self._complete(unit, res, exc)
            return
        fut = self.client.score_async(x, tp)
        fut.add_done_callback(lambda f, u=unit: self._done.put((u, *_outcome(f))))

    def _complete(self, unit: _Unit, result, exc) -> None:
        self.in_flight -= 1
        elapsed = time.perf_counter_ns() - unit.started
        if exc is None:
            out = result.output
            offsets = np.cumsum([0, *unit.rows]) if unit.rows else None
            for i, prep in enumerate(unit.preps):
                y = out if offsets is None else slice_feeds(out, offsets[i], offsets[i + 1])
                self.emit(prep, self.op.finish(prep, y, elapsed, result.server_inference_ns,
                                               result.server_queue_ns, result.server))
            return
        if _retriable(exc) and unit.attempts <= self.retries:
            delay = self.backoff_s * (2 ** (unit.attempts - 1))
            heapq.heappush(self._retry, (time.monotonic() + delay, next(self._seq), unit))
            return
        self.failures += 1
        reason = BAD_SHAPE if isinstance(exc, BadInputError) else (
            UNKNOWN_MODEL if isinstance(exc, ModelNotFoundError) else SCORING_ERROR)
        detail = f"{self.client.kind} at {self.client.target} after {unit.attempts} attempt(s): " \
                 f"{type(exc).__name__}: {exc}"
        for prep in unit.preps:
            self.emit(prep, self.op.fail(prep, detail, reason))

    def _restart_due(self) -> None:
        now = time.monotonic()
        while self._retry and self._retry[0][0] <= now:
            _, _, unit = heapq.heappop(self._retry)
            self._start(unit)


def _outcome(fut):
    exc = fut.exception()
    return (None, exc) if exc is not None else (fut.result(), None)


def _retriable(exc: BaseException) -> bool:
    """Worth another attempt: the server was busy, slow or away. Not: a bad input or model name."""
    return isinstance(exc, (OverloadedError, DeadlineExceededError, UnavailableError)) \
        or not isinstance(exc, ServingError)
