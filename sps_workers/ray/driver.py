"""The Ray driver: starts (or joins) Ray, spawns mp input -> scoring -> output actor chains, and
runs them until SIGTERM. See the package docstring (sps_workers.ray) for the whole picture."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time

from sps_workers.ray.options import RayOptions
from sps_workers.runtime import mark_ready
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.ray")

# Passed on to the actors' processes on a cluster (a local Ray's processes inherit them anyway).
FORWARDED_ENV_PREFIXES = ("OTEL_", "CRAYFISH_")


def local_ray_env() -> None:
    """Environment of a fresh local Ray, set before ray is imported (read at import / init)."""
    os.environ.update({
        "RAY_USAGE_STATS_ENABLED": "0",         # no usage reporting (and no network attempt)
        "RAY_ADDRESS": "",                      # never join some other cluster by accident
        # single-node mode: Ray keeps 127.0.0.1 as the node address instead of the host's routable IP
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_DEDUP_LOGS": "0",
    })
    # Ray 2.60 turns token auth on for a new local cluster and would write the token to
    # ~/.ray/auth_token: a fresh one in the environment instead (inherited, never written).
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def remote_ray_env() -> None:
    """Environment for joining a cluster, set before ray is imported: with a token in
    RAY_AUTH_TOKEN, token mode (Ray Client sends the token only then)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def init_ray(settings: WorkerSettings, opts: RayOptions):
    import ray  # inside: Ray reads the environment set by local_ray_env / remote_ray_env when imported

    env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    runtime_env = dict(opts.runtime_env)
    if not opts.local and env_vars:
        runtime_env["env_vars"] = {**env_vars, **runtime_env.get("env_vars", {})}
    kwargs = {"runtime_env": runtime_env or None, "logging_level": logging.WARNING, "log_to_driver": True}
    if opts.local:
        num_cpus = opts.num_cpus or max(os.cpu_count() or 1, int(-(-settings.parallelism * opts.scoring_cpus // 1)))
        os.makedirs(opts.temp_dir, exist_ok=True)
        ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=opts.temp_dir,
                 object_store_memory=opts.object_store_mb * 1024 * 1024, **kwargs)
    else:
        ray.init(address=opts.address, **kwargs)
    return ray


def run(settings: WorkerSettings, opts: RayOptions) -> None:
    stop = threading.Event()

    def on_signal(*_):
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    t0 = time.monotonic()
    ray = init_ray(settings, opts)
    # after ray.init: it installs a handler of its own that dies on SIGTERM without draining
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    t_ray = time.monotonic() - t0

    from sps_workers.ray.actors import InputActor, OutputActor, ScoringActor  # inside: imports ray (see init_ray)

    sj = settings.model_dump_json()
    mp = settings.parallelism
    scorers = outputs = inputs = runs = []
    failed = None
    try:
        scorers = [ScoringActor.options(name=f"{settings.worker_id}-score-{i}", num_cpus=opts.scoring_cpus)
                   .remote(sj, i) for i in range(mp)]
        outputs = [OutputActor.options(name=f"{settings.worker_id}-out-{i}", num_cpus=0).remote(sj, i)
                   for i in range(mp)]
        ray.get([a.ready.remote() for a in scorers + outputs])
        inputs = [InputActor.options(name=f"{settings.worker_id}-in-{i}", num_cpus=0)
                  .remote(sj, i, scorers[i], outputs[i], opts.max_in_flight) for i in range(mp)]
        runs = [a.run.remote() for a in inputs]
        ready = False
        while not stop.is_set():
            done, _ = ray.wait(runs, timeout=0.2)
            if done:
                ray.get(done)   # raises the actor's error
                raise RuntimeError("an input actor stopped on its own")
            if not ready:
                st = ray.get([a.status.remote() for a in inputs])
                if st[0]["partitions"] and sum(len(s["assigned"]) for s in st) >= st[0]["partitions"]:
                    ready = True
                    mark_ready(settings)
                    print(f"crayfish ray worker ready: ray {ray.__version__}, {mp} input/scoring/output actor "
                          f"chains, ray up in {t_ray:.1f}s, ready in {time.monotonic() - t0:.1f}s", flush=True)
    except BaseException as exc:
        failed = exc
        raise
    finally:
        _shutdown(ray, inputs, runs, scorers, outputs, opts, failed)


def _shutdown(ray, inputs, runs, scorers, outputs, opts: RayOptions, failed) -> None:
    """Drain: input actors stop polling, wait for what is in flight and commit; then the scoring
    actors close their EngineInstances (spans flushed) and the producers flush; then Ray goes."""
    t0 = time.monotonic()
    deadline = t0 + opts.stop_timeout_s

    def left() -> float:
        return max(0.5, deadline - time.monotonic())

    try:
        for a in inputs:
            a.stop.remote()
        if runs:
            done, pending = ray.wait(runs, num_returns=len(runs), timeout=left())
            for ref in done:
                try:
                    log.info("input actor: %s", ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - report, keep shutting down
                    if failed is None:
                        print(f"crayfish ray worker: input actor failed: {exc}", flush=True)
            if pending:
                print(f"crayfish ray worker: {len(pending)} input actors did not drain in time", flush=True)
        closing = [a.close.remote() for a in scorers + outputs]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=left())
    finally:
        ray.shutdown()
    print(f"crayfish ray worker stopped in {time.monotonic() - t0:.1f}s", flush=True)
