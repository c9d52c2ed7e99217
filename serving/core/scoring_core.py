"""The :class:`ScoringCore`: a pool of scorer instances per served model (see :mod:`serving.core`)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from crayfish.tensor import feed_rows
from serving.core.batching import BatchingPool
from serving.core.pools import DirectPool, Pool, ScoreResult
from serving.core.settings import CoreSettings
from serving.embedded import Scorer, create_scorer
from serving.errors import BadInputError, ModelNotFoundError, UnavailableError
from serving.models.build import resolve_spec
from serving.models.spec import FeedError, check_feeds

log = logging.getLogger("serving.core")

_F32 = np.dtype(np.float32)


class ScoringCore:
    """Pools of scorer instances for the models in ``settings``; see the module docstring.

    ``ScoringCore(settings)`` loads (and warms up) every instance before returning and raises
    :class:`serving.embedded.ScorerConfigError` for a bad backend / option / unbuilt model. With
    ``load=False`` nothing is loaded until :meth:`load` is called (a server can then start,
    report NOT_SERVING while loading, and flip to SERVING from a :meth:`add_ready_callback`).
    """

    def __init__(self, settings: CoreSettings | None = None, *, load: bool = True):
        self.settings = settings if settings is not None else CoreSettings()
        self._served = {m.name: m for m in self.settings.served_models}
        self._pools: dict[str, Pool] = {}
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
            pools: dict[str, Pool] = {}
            for name, m in self._served.items():
                scorers = [made[(name, i)] for i in range(st.instances)]
                spec = resolve_spec(m.spec_name, self.settings.models_dir)
                if st.batching is None:
                    pools[name] = DirectPool(name, spec, m.backend, scorers, st.max_queue)
                else:
                    pools[name] = BatchingPool(name, spec, m.backend, scorers, st.max_queue,
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
    def _pool(self, model: str) -> Pool:
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

    def score(self, model: str, x, deadline: float | None = None) -> ScoreResult:
        """Score ``x`` (float32 ``[b>=1, *spec.input_shape]``, or ``{input name: array}``:
        serving.models.spec.check_feeds) on ``model``; thread-safe, blocking. The output is a
        ``{output name: array}`` dict when ``x`` was one or the model has several outputs.

        ``deadline``: absolute ``time.monotonic()`` seconds, or ``None`` to wait as long as it
        takes. Raises the :mod:`serving.errors` types listed in the module docstring.
        """
        pool = self._pool(model)
        spec = pool.spec
        named = isinstance(x, dict)
        if pool.simple and not named:
            try:
                dt = x.dtype
                shape = x.shape
            except AttributeError:
                raise BadInputError(f"model {model!r}: expected a float32 array, got "
                                    f"{type(x).__name__}") from None
            item = spec.input_shape
            ok = (dt is _F32 or dt == _F32) and shape[1:] == item and shape and shape[0] >= 1
            message = f"model {model!r}: expected float32 [b>=1, {', '.join(map(str, item))}], got {dt} {list(shape)}"
        else:
            try:
                x, ok = check_feeds(spec, x), True
            except FeedError as exc:
                ok, message = False, f"model {model!r}: {exc}"
        if not ok:
            with pool.lock:
                pool.stats["bad_input"] += 1
            raise BadInputError(message)
        rows = feed_rows(x)
        with pool.lock:
            pool.in_flight += 1
            stats = pool.stats
            stats["peak_in_flight"] = max(stats["peak_in_flight"], pool.in_flight)
            hist = pool.request_rows
            hist[rows] = hist.get(rows, 0) + 1
        try:
            r = pool.score(x, deadline)
            if named and not isinstance(r.output, dict):   # named in, named out
                r = dataclasses.replace(r, output={spec.output_name: r.output})
            return r
        finally:
            with pool.lock:
                pool.in_flight -= 1

    def describe(self, model: str) -> dict[str, Any]:
        """Inputs/outputs (name, dtype, shape with -1 for the batch axis), backend and serving
        setup of ``model``; JSON-able. Raises ModelNotFoundError."""
        m = self._served.get(model)
        if m is None:
            raise self._not_found(model)
        spec = resolve_spec(m.spec_name, self.settings.models_dir)
        st = self.settings
        pool = self._pools.get(model)
        return {
            "model": model,
            "spec": m.spec_name,
            "backend": m.backend,
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in spec.inputs],
            "outputs": [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in spec.outputs],
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


__all__ = ["ScoringCore"]
