"""The transport-agnostic scoring core: model pools, bounded queues, deadlines, dynamic batching.

Every network protocol the mesh serves is a *thin adapter* over one :class:`ScoringCore` (the
MLServer layout): the adapter decodes its wire format into a numpy array, calls
:meth:`ScoringCore.score` (or :meth:`ScoringCore.describe`), encodes the result, and turns any
:class:`serving.errors.ServingError` into its protocol's status with
:func:`serving.errors.grpc_status` -- the one error mapping of the serving layer. Queueing,
back-pressure, deadlines, batching, timing and the choice of instance all live here, so they
behave the same whichever protocol a request came through.

Using the core directly (no gRPC needed; this module never imports it)::

    from serving.core import ScoringCore
    from serving.scoring.settings import ScoringSettings

    core = ScoringCore(ScoringSettings(models=["ffnn"], instances=2))   # loads + warms up
    r = core.score("ffnn", x)               # x: float32 [b, 1, 784]; blocks; thread-safe
    r.output, r.inference_ns, r.queue_ns, r.backend, r.instance
    core.describe("ffnn")                   # {"model", "backend", "inputs", "outputs", ...}
    core.stats()                            # per-model counters (requests, backend_calls, ...)
    core.close()

Adding a protocol adapter (TF Serving ``PredictionService``, KServe v2 ``GRPCInferenceService``,
HTTP/JSON, ...)
------------------------------------------------------------------------------------------------
1. Write a servicer / handler that holds the core and, per request:

   - decodes the input to a numpy array (a decoding failure is a :class:`BadInputError`);
   - computes an absolute deadline on the ``time.monotonic()`` clock from whatever the protocol
     carries (gRPC: ``time.monotonic() + context.time_remaining()``; HTTP: a timeout header),
     or ``None``;
   - calls ``core.score(model, x, deadline)`` -- thread-safe, blocking; it validates the model
     name and the input, so adapters don't;
   - encodes ``ScoreResult.output`` (and the timings if the protocol has room for them);
   - on ``except Exception as exc``: ``code, message = grpc_status(exc)`` and reports that
     (gRPC: ``context.abort(code, message)``; HTTP: translate the gRPC code to an HTTP status
     in one table next to the HTTP adapter -- still starting from ``grpc_status``).

2. For a gRPC protocol, register it on the same server as ``crayfish.v1.Scoring`` with a hook
   ``add_protocol(server, core)`` passed to :func:`serving.scoring.server.build_server`
   (``protocols=[...]``) or named in ``ScoringSettings.protocols``; see that module's docstring.
   The adapter never touches scorers, pools or threads of its own.

Semantics
---------
- *Models*: ``settings.models`` names models of :data:`serving.models.MODELS`; an entry may
  also be a :class:`serving.scoring.settings.ModelEntry` to serve a model under another name
  and/or on another backend (e.g. ``{"name": "ffnn-hung", "model": "ffnn", "backend": "sleep",
  "backend_options": {"delay_ms": 10000}}`` next to the real ``ffnn``). Requests name the
  served name.
- *Instances* (``settings.instances``, the paper's mp): each served model has that many scorer
  objects (:func:`serving.embedded.create_scorer`, each its own backend session with the
  configured threads), created in parallel and warmed up (one zero row) by :meth:`load`;
  :attr:`ready` turns true only when all of them are loaded.
- *Without batching*: a request takes a free instance, or waits for one in FIFO order. At most
  ``max_queue`` requests of a model wait; one more is rejected at once with
  :class:`OverloadedError`. A request whose deadline passes while it waits (or before its turn
  comes) gets :class:`DeadlineExceededError` and never reaches the backend. ``queue_ns`` is the
  wait for an instance, ``inference_ns`` the backend call.
- *With batching* (``settings.batching``): requests go to a per-model queue (bounded by
  ``max_queue``). One batcher thread per instance; one batch forms at a time: the batcher takes
  the oldest request, adds queued requests while the rows stay within ``max_batch_size`` and
  ``max_queue_delay_us`` has not passed since the first one *arrived*, concatenates them on
  axis 0, scores once, and gives every caller exactly its own rows of the output. Requests
  whose deadline already passed are dropped from the batch (DeadlineExceededError). A request
  larger than ``max_batch_size`` is scored alone. ``queue_ns`` = arrival -> batch start;
  ``inference_ns`` = the whole batch's backend call (shared by its requests).
- Errors a caller can get: :class:`ModelNotFoundError`, :class:`BadInputError` (not an
  ndarray, not float32, shape not ``[b>=1, *spec.input_shape]``), :class:`OverloadedError`,
  :class:`DeadlineExceededError`, :class:`UnavailableError` (not loaded yet / closed),
  :class:`BackendError` (the backend raised; logged here with its traceback).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from serving.embedded import Scorer, ScoringError, create_scorer
from serving.errors import (
    BackendError,
    BadInputError,
    DeadlineExceededError,
    ModelNotFoundError,
    OverloadedError,
    ServingError,
    UnavailableError,
)
from serving.models.spec import MODELS, ModelSpec
from serving.scoring.settings import ScoringSettings

log = logging.getLogger(__name__)

_F32 = np.dtype(np.float32)
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

    output: np.ndarray
    inference_ns: int
    queue_ns: int
    backend: str
    instance: int
    batch_rows: int


_STAT_KEYS = ("requests", "completed", "rows", "backend_calls", "rejected_overloaded",
              "deadline_exceeded", "bad_input", "backend_errors", "max_batch_rows",
              "peak_busy_instances", "peak_in_flight")


def _backend_error(model: str, backend: str, exc: Exception) -> ServingError:
    if isinstance(exc, ScoringError):
        return BadInputError(str(exc))
    log.error("model %r on backend %r failed", model, backend, exc_info=exc)
    return BackendError(f"model {model!r} on backend {backend!r} failed: {type(exc).__name__}: {exc}")


class _Pool:
    """Scorers of one model plus the counters; subclasses decide how requests reach them."""

    def __init__(self, name: str, spec: ModelSpec, backend: str, scorers: list[Scorer],
                 max_queue: int):
        self.spec = spec
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


class _DirectPool(_Pool):
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
                err = _backend_error(self.name, self.backend, exc)
                with self.lock:
                    stats["bad_input" if isinstance(err, BadInputError) else "backend_errors"] += 1
                raise err from exc
            end = _now_ns()
        finally:
            self._release(idx)
        rows = x.shape[0]
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


class _Pending:
    __slots__ = ("x", "rows", "arrive", "deadline", "event", "taken", "result", "error")

    def __init__(self, x: np.ndarray, deadline: float | None):
        self.x = x
        self.rows = x.shape[0]
        self.arrive = _now_ns()
        self.deadline = deadline
        self.event = threading.Event()
        self.taken = False
        self.result: ScoreResult | None = None
        self.error: BaseException | None = None


class _BatchingPool(_Pool):
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
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch], axis=0)
            t0 = _now_ns()
            out = self.scorers[idx]._score(x)
            t1 = _now_ns()
            if getattr(out, "shape", (None,))[0] != total:
                raise RuntimeError(f"backend returned {getattr(out, 'shape', None)} for a batch "
                                   f"of {total} rows")
        except Exception as exc:
            err = _backend_error(self.name, self.backend, exc)
        if err is None:
            inference = t1 - t0
            off = 0
            for p in batch:
                p.result = ScoreResult(out[off:off + p.rows], inference, t_batch - p.arrive,
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


class ScoringCore:
    """Pools of scorer instances for the models in ``settings``; see the module docstring.

    ``ScoringCore(settings)`` loads (and warms up) every instance before returning and raises
    :class:`serving.embedded.ScorerConfigError` for a bad backend / option / unbuilt model. With
    ``load=False`` nothing is loaded until :meth:`load` is called (a server can then start,
    report NOT_SERVING while loading, and flip to SERVING from a :meth:`add_ready_callback`).
    """

    def __init__(self, settings: ScoringSettings | None = None, *, load: bool = True):
        self.settings = settings if settings is not None else ScoringSettings()
        self._served = {m.name: m for m in self.settings.served_models}
        self._pools: dict[str, _Pool] = {}
        self._load_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._ready = False
        self._closed = False
        self._ready_callbacks: list[Callable[[], None]] = []
        if load:
            self.load()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once every instance of every model is loaded and warmed up (and not closed)."""
        return self._ready and not self._closed

    @property
    def models(self) -> list[str]:
        """The served model names (what requests name), in configuration order."""
        return list(self._served)

    def add_ready_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the core is ready (at once, in this thread, if it already is)."""
        with self._state_lock:
            if not self._ready:
                self._ready_callbacks.append(fn)
                return
        fn()

    def load(self) -> None:
        """Create and warm up ``instances`` scorers per model (in parallel); idempotent.

        Raises whatever scorer creation raises (``ScorerConfigError`` for configuration
        problems); then nothing stays loaded.
        """
        with self._load_lock:
            if self._ready:
                return
            if self._closed:
                raise UnavailableError("the scoring core is closed")
            st = self.settings
            jobs = [(m, i) for m in self._served for i in range(st.instances)]
            t0 = time.perf_counter()

            def make(job: tuple[str, int]) -> Scorer:
                m = self._served[job[0]]
                s = create_scorer(m.backend, m.spec_name, st.models_dir, **m.backend_options)
                try:
                    if m.warmup:
                        s.warmup(batch_size=1, iterations=1)
                except BaseException:
                    s.close()
                    raise
                return s

            made: dict[tuple[str, int], Scorer] = {}
            first_error: BaseException | None = None
            with ThreadPoolExecutor(max_workers=min(len(jobs), 16),
                                    thread_name_prefix="load") as ex:
                futures = {job: ex.submit(make, job) for job in jobs}
                for job, fut in futures.items():
                    try:
                        made[job] = fut.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below
                        first_error = first_error or exc
            if first_error is not None:
                for s in made.values():
                    s.close()
                raise first_error
            pools: dict[str, _Pool] = {}
            for name, m in self._served.items():
                scorers = [made[(name, i)] for i in range(st.instances)]
                spec = MODELS[m.spec_name]
                if st.batching is None:
                    pools[name] = _DirectPool(name, spec, m.backend, scorers, st.max_queue)
                else:
                    pools[name] = _BatchingPool(name, spec, m.backend, scorers, st.max_queue,
                                                st.batching.max_batch_size,
                                                st.batching.max_queue_delay_us)
            self._pools = pools
            with self._state_lock:
                self._ready = True
                callbacks, self._ready_callbacks = self._ready_callbacks, []
            log.info("%s: loaded %s x%d in %.2f s", st.service_name,
                     ", ".join(f"{n} ({m.backend})" for n, m in self._served.items()),
                     st.instances, time.perf_counter() - t0)
        for fn in callbacks:
            try:
                fn()
            except Exception:  # pragma: no cover - a callback bug must not unload the core
                log.exception("ready callback %r failed", fn)

    def close(self, timeout: float = 5.0) -> None:
        """Reject new requests (UnavailableError), fail queued ones, give running calls up to
        ``timeout`` seconds, then close every scorer. Idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        for pool in self._pools.values():
            pool.close(timeout)

    def __enter__(self) -> "ScoringCore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------
    def _pool(self, model: str) -> _Pool:
        pool = self._pools.get(model)
        if pool is not None:
            return pool
        if model not in self._served:
            raise self._not_found(model)
        if self._closed:
            raise UnavailableError("the scoring core is closed")
        raise UnavailableError(f"model {model!r} is still loading")

    def _not_found(self, model: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"model {model!r} is not served here; served: "
                                  f"{', '.join(self._served)}")

    def score(self, model: str, x: np.ndarray, deadline: float | None = None) -> ScoreResult:
        """Score ``x`` (float32 ``[b>=1, *spec.input_shape]``) on ``model``; thread-safe, blocking.

        ``deadline``: absolute ``time.monotonic()`` seconds, or ``None`` to wait as long as it
        takes. Raises the :mod:`serving.errors` types listed in the module docstring.
        """
        pool = self._pool(model)
        try:
            dt = x.dtype
            shape = x.shape
        except AttributeError:
            raise BadInputError(f"model {model!r}: expected a float32 array, got "
                                f"{type(x).__name__}") from None
        item = pool.spec.input_shape
        if (dt is not _F32 and dt != _F32) or shape[1:] != item or not shape or shape[0] < 1:
            with pool.lock:
                pool.stats["bad_input"] += 1
            raise BadInputError(f"model {model!r}: expected float32 [b>=1, "
                                f"{', '.join(map(str, item))}], got {dt} {list(shape)}")
        rows = shape[0]
        with pool.lock:
            pool.in_flight += 1
            stats = pool.stats
            stats["peak_in_flight"] = max(stats["peak_in_flight"], pool.in_flight)
            hist = pool.request_rows
            hist[rows] = hist.get(rows, 0) + 1
        try:
            return pool.score(x, deadline)
        finally:
            with pool.lock:
                pool.in_flight -= 1

    def describe(self, model: str) -> dict[str, Any]:
        """Inputs/outputs (name, dtype, shape with -1 for the batch axis), backend and serving
        setup of ``model``; JSON-able. Raises ModelNotFoundError."""
        m = self._served.get(model)
        if m is None:
            raise self._not_found(model)
        spec = MODELS[m.spec_name]
        st = self.settings
        pool = self._pools.get(model)
        return {
            "model": model,
            "spec": m.spec_name,
            "backend": m.backend,
            "inputs": [{"name": spec.input_name, "dtype": spec.input_dtype,
                        "shape": [-1, *spec.input_shape]}],
            "outputs": [{"name": spec.output_name, "dtype": "float32",
                         "shape": [-1, *spec.output_shape]}],
            "instances": st.instances,
            "max_queue": st.max_queue,
            "batching": st.batching.model_dump() if st.batching is not None else None,
            "ready": self.ready,
            "scorer": pool.scorers[0].describe() if pool is not None and not self._closed else None,
        }

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per model: requests (validated and admitted or rejected), completed, rows,
        backend_calls, rejected_overloaded, deadline_exceeded, bad_input, backend_errors,
        max_batch_rows (rows of the largest backend call, after any dynamic batching),
        peak_busy_instances, peak_in_flight (most requests inside the server at once: waiting
        or scoring, from every caller together); the current queue_depth, busy_instances and
        in_flight; and request_rows, ``{batch dimension: requests}`` of the requests as they
        arrived (before dynamic batching). A snapshot; counters and peaks only grow."""
        out: dict[str, dict[str, Any]] = {}
        for m, pool in self._pools.items():
            with pool.lock:
                d: dict[str, Any] = dict(pool.stats)
                d["queue_depth"] = pool.queue_depth()
                d["busy_instances"] = pool.busy()
                d["in_flight"] = pool.in_flight
                d["request_rows"] = dict(sorted(pool.request_rows.items()))
            out[m] = d
        return out


__all__ = ["ScoringCore", "ScoreResult"]
