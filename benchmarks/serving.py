"""Part 5: our Scoring gRPC server (serving/scoring): per-call overhead, dynamic batching gain,
pipelined vs blocking external calls end to end.

Definitions (``serving``; numbers are reported, never asserted):

a. **Unary call overhead**. The FFNN input of part 1 (``[1, 1, 784]``, seed 42). First the embedded
   scorer in this process (``serving.embedded.create_scorer("onnxruntime", "ffnn")``, 1 intra / 1
   inter-op thread, no server up): ``N`` timed ``score(x)`` calls after a warm-up. Then a Scoring
   server (``serving.scoring.launcher.start``, same backend options, 1 instance, no batching) and
   one sequential Python client (``serving.clients.create_client("scoring", ...)``): ``N`` timed
   ``client.score(x)`` calls after the same warm-up. **calls/s** = ``N`` / wall time of the loop;
   **latency** = ``perf_counter_ns`` around each call (mean, p50, p99); **gRPC overhead per call**
   = client latency - embedded latency (p50 and mean). Also reported: the server's own
   ``inference_ns`` / ``queue_ns`` of each response, and CPU per call of the client (this
   process, ``time.process_time``) and of the server process (``psutil``).
b. **Dynamic batching under open load**. A 1-instance server with batching off, then on
   (``max_batch_size`` 32, ``max_queue_delay_us`` 500); one client keeps 64 native async calls
   (``score_async``) outstanding, starting a new one as each completes, for a warm-up plus a
   measured window. **calls/s** = calls completed in the window / its length; **gain** = on /
   off. The core's counters are not exposed over gRPC, so the **average batch rows** are
   estimated from the responses (the requests of one backend call share its ``inference_ns`` and
   complete together: see :func:`_count_backend_calls`; batching off must come out at ~1). Done
   for ONNX FFNN and, unless ``serving_batch_sleep_delay_ms`` is None, for a ``sleep`` backend
   (2 ms per backend call, whatever its rows): there the backend is the bottleneck and batching
   must pay off; for the FFNN (~20 us a call) the per-request gRPC cost dominates.
c. **Pipelined vs blocking external calls**, end to end through Kafka: sustainable-throughput
   searches like part 3 (``benchmarks.common.search_experiment`` / ``run_search``; mp 1, batch
   size 1, ``serving_point_duration_s`` points, at most ``serving_max_points`` rates) with
   ``serving: {kind: external, server: scoring, call_mode: blocking | pipelined, max_in_flight:
   8}``; the runner starts the server for every point. (i) backend ``sleep`` ``delay_ms`` 5, 8
   instances: the server is not CPU-bound; blocking caps near 1 / (5 ms + a call's overhead)
   (< 200/s), pipelined near 8x that. (ii) ONNX FFNN, 1 instance. The blocking search starts at a
   fixed rate, the pipelined one at a factor times the blocking result (4 for sleep, where it is
   expected to hold; 1 for ONNX). **ratio** = pipelined / blocking sustainable rate, with its
   bracket from the searches' ``[sustainable, lowest failed)`` intervals; goal for sleep: >= 4x
   (>> 1; ideal 8x), judged only when both searches found a failing rate. A search that errors is
   retried once, the error kept.
d. **Accuracy of the ``sleep`` backend** (the calibration backend of the experiments: a
   ``delay_ms`` model must take exactly that long), in this process, no server: for each delay of
   ``SLEEP_ACCURACY_DELAYS_MS``, ``serving_sleep_accuracy_calls`` timed ``score(x)`` calls
   (``perf_counter_ns`` around each); **overshoot** = measured - delay (min, p50, p99, max, us)
   and ``never_early`` (min overshoot >= 0). Moved here from the unit tests, which no longer
   judge wall-clock durations.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks.common import (
    BenchSettings,
    error_line,
    percentile,
    ratio,
    run_search,
    scaling_bounds,
    search_experiment,
)
from benchmarks.efficiency import MODEL, ORT_OPTIONS, input_array
from serving.clients import create_client
from serving.embedded import create_scorer
from serving.models import MODELS
from serving.scoring import launcher

PIPELINING_GOAL = 4.0  # pipelined / blocking with the sleep server ("much more than 1"; ideal: max_in_flight)


def _latency_us(ns: list[int]) -> dict:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {"mean_us": float(us.mean()) if us.size else None, "p50_us": percentile(us, 50),
            "p99_us": percentile(us, 99), "n": int(us.size)}


def _start(out_dir: Path, name: str, **kw):
    return launcher.start(MODEL, log_dir=out_dir / name, **kw)


# ----------------------------------------------------------------------------------------------
# 5a. unary call overhead
# ----------------------------------------------------------------------------------------------


def unary(out_dir: Path, s: BenchSettings, log=print) -> dict:
    """Sequential unary calls (one Python client, batch 1) vs the same input on the embedded
    scorer in this process; the embedded loop runs first, with no server up."""
    x = input_array(s.seed)
    n, warm = s.serving_unary_calls, s.serving_unary_warmup

    log(f"serving: embedded scorer, {n:,} calls")
    scorer = create_scorer("onnxruntime", MODEL, **ORT_OPTIONS)
    try:
        for _ in range(warm):
            scorer.score(x)
        emb_ns = []
        c0 = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            scorer.score(x)
            emb_ns.append(time.perf_counter_ns() - t0)
        emb_cpu = time.process_time() - c0
    finally:
        scorer.close()

    log(f"serving: Scoring server (ONNX FFNN, 1 instance), {n:,} sequential unary calls")
    server = _start(out_dir, "unary", instances=1, backend="onnxruntime", backend_options=dict(ORT_OPTIONS))
    client = create_client("scoring", server.target, MODEL, timeout_s=5.0)
    try:
        client.wait_ready(30)
        for _ in range(warm):
            client.score(x)
        lat_ns, inf_ns, queue_ns = [], [], []
        srv_c0 = server.service.cpu_seconds()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            r = client.score(x)
            lat_ns.append(time.perf_counter_ns() - t0)
            inf_ns.append(r.server_inference_ns)
            queue_ns.append(r.server_queue_ns)
        wall = time.perf_counter() - w0
        cli_cpu = time.process_time() - c0
        srv_cpu = server.service.cpu_seconds() - srv_c0
    finally:
        client.close()
        server.stop()

    grpc_lat, emb_lat = _latency_us(lat_ns), _latency_us(emb_ns)
    inf = _latency_us(inf_ns)
    return {
        "calls": n, "warmup_calls": warm, "input_shape": list(x.shape), "backend_options": ORT_OPTIONS,
        "grpc": {"calls_per_s": n / wall, "latency": grpc_lat,
                 "server_inference": inf, "server_queue": _latency_us(queue_ns),
                 "client_cpu_us_per_call": cli_cpu / n * 1e6, "server_cpu_us_per_call": srv_cpu / n * 1e6},
        "embedded": {"calls_per_s": n / (sum(emb_ns) / 1e9), "latency": emb_lat,
                     "cpu_us_per_call": emb_cpu / n * 1e6},
        # what a call over gRPC adds to the same scoring in-process
        "grpc_overhead_us": {"p50": grpc_lat["p50_us"] - emb_lat["p50_us"],
                             "mean": grpc_lat["mean_us"] - emb_lat["mean_us"]},
        # the same, against the server's own backend time (inference_ns of each response)
        "grpc_minus_server_inference_us": {"p50": grpc_lat["p50_us"] - inf["p50_us"],
                                           "mean": grpc_lat["mean_us"] - inf["mean_us"]},
    }


# ----------------------------------------------------------------------------------------------
# 5b. dynamic batching under open load
# ----------------------------------------------------------------------------------------------


GROUP_GAP_NS = 5_000_000


def _count_backend_calls(window: list[tuple[int, int, int]]) -> int:
    """Estimated backend calls behind ``(completed ns, latency ns, inference_ns)`` responses.

    The core's counters are not exposed over gRPC; but every request of one backend call gets
    that call's ``inference_ns`` (a duration, so unrelated calls can share it by chance) and
    they complete at the client close together. A backend call is counted for each run of
    equal ``inference_ns`` whose completions are less than ``GROUP_GAP_NS`` apart. Without
    batching this should give ~1 row per call (the estimate's sanity check)."""
    calls, last = 0, {}
    for t_done, _lat, inf in sorted(window):
        prev = last.get(inf)
        if prev is None or t_done - prev > GROUP_GAP_NS:
            calls += 1
        last[inf] = t_done
    return calls


def open_load(client, x: np.ndarray, in_flight: int, warmup_s: float, duration_s: float) -> dict:
    """Keep ``in_flight`` native async calls outstanding (each completion frees a slot for the
    next call) for ``warmup_s + duration_s``; only calls completing in the last ``duration_s``
    count. The average batch rows (1 call = 1 row here) is estimated from the responses: see
    :func:`_count_backend_calls`."""
    slots = threading.BoundedSemaphore(in_flight)
    lock = threading.Lock()
    done: list[tuple[int, int, int]] = []     # (completed ns, latency ns, server inference_ns)
    errors: list[str] = []

    def on_done(fut, t0: int) -> None:
        t1 = time.perf_counter_ns()
        try:
            r = fut.result()
            with lock:
                done.append((t1, t1 - t0, r.server_inference_ns))
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()

    start = time.perf_counter_ns()
    t_measure = start + int(warmup_s * 1e9)
    t_end = t_measure + int(duration_s * 1e9)
    sent = 0
    while time.perf_counter_ns() < t_end:
        if not slots.acquire(timeout=1.0):
            continue
        t0 = time.perf_counter_ns()
        fut = client.score_async(x)
        sent += 1
        fut.add_done_callback(lambda f, t0=t0: on_done(f, t0))
    # drain what is still outstanding (not counted: it completes after the window)
    for _ in range(in_flight):
        slots.acquire(timeout=10.0)
    with lock:
        window = [d for d in done if t_measure <= d[0] < t_end]
        n_errors = len(errors)
    completed = len(window)
    batches = _count_backend_calls(window)
    return {"in_flight": in_flight, "warmup_s": warmup_s, "duration_s": duration_s, "sent": sent,
            "completed": completed, "calls_per_s": completed / duration_s, "errors": n_errors,
            "first_errors": errors[:3],
            "latency": _latency_us([d[1] for d in window]),
            "est_backend_calls": batches, "est_avg_batch_rows": ratio(completed, batches)}


def _load_pair(out_dir: Path, s: BenchSettings, label: str, backend: str, options: dict, log=print) -> dict:
    """Open load against a 1-instance server with batching off, then on."""
    x = input_array(s.seed)
    cfgs = {"off": None, "on": {"max_batch_size": s.serving_batch_max_size,
                                "max_queue_delay_us": s.serving_batch_max_queue_delay_us}}
    res: dict = {"backend": backend, "backend_options": options, "instances": 1,
                 "in_flight": s.serving_load_in_flight}
    for key, cfg in cfgs.items():
        log(f"serving: open load on {label}, {s.serving_load_in_flight} in flight, batching {key}")
        server = _start(out_dir, f"batching-{label}-{key}", instances=1, backend=backend,
                        backend_options=dict(options), batching=cfg)
        client = create_client("scoring", server.target, MODEL, timeout_s=10.0,
                               max_in_flight=s.serving_load_in_flight)
        try:
            client.wait_ready(30)
            srv_c0 = server.service.cpu_seconds()
            r = open_load(client, x, s.serving_load_in_flight, s.serving_load_warmup_s,
                          s.serving_load_duration_s)
            srv_cpu = server.service.cpu_seconds() - srv_c0
        finally:
            client.close()
            server.stop()
        # server CPU over the whole load (warm-up included) per call sent
        r["server_cpu_us_per_call"] = srv_cpu / r["sent"] * 1e6 if r["sent"] else None
        res[key] = {"batching": cfg, **r}
    res["ratio_on_to_off"] = ratio(res["on"]["calls_per_s"], res["off"]["calls_per_s"])
    return res


def batching(out_dir: Path, s: BenchSettings, log=print) -> dict:
    """ONNX FFNN (the brief's measurement) and, when set, a ``sleep`` backend whose fixed cost
    per backend call makes the backend the bottleneck (where batching must pay off)."""
    res = _load_pair(out_dir, s, "onnx", "onnxruntime", ORT_OPTIONS, log)
    if s.serving_batch_sleep_delay_ms:
        res["sleep"] = _load_pair(out_dir, s, "sleep", "sleep", {"delay_ms": s.serving_batch_sleep_delay_ms}, log)
    return res


# ----------------------------------------------------------------------------------------------
# 5c. pipelined vs blocking external calls, end to end (Kafka, worker, server)
# ----------------------------------------------------------------------------------------------


def _serving_section(backend: str, call_mode: str, s: BenchSettings) -> dict:
    sv = {"kind": "external", "server": "scoring", "backend": backend, "call_mode": call_mode,
          "max_in_flight": s.serving_max_in_flight, "threads": 1, "inter_threads": 1}
    if backend == "sleep":
        sv.update(delay_ms=s.serving_sleep_delay_ms, instances=s.serving_sleep_instances)
    else:
        sv["instances"] = 1
    return sv


def pipelining(bootstrap: str, out_dir: Path, s: BenchSettings, console=None, log=print) -> dict:
    res: dict = {"parallelism": 1, "max_in_flight": s.serving_max_in_flight,
                 "point_duration_s": s.serving_point_duration_s, "max_points": s.serving_max_points}

    def one(key: str, backend: str, call_mode: str, start_rate: float) -> dict:
        """One search; on an error (a crashed service) it is retried once, the error kept."""
        errors = []
        for attempt in range(2):
            name = key if attempt == 0 else f"{key}-retry"
            log(f"serving: search {name} (start {start_rate:,.0f}/s)")
            try:
                exp = search_experiment(name, _serving_section(backend, call_mode, s), 1, start_rate, bootstrap, s,
                                        point_duration_s=s.serving_point_duration_s,
                                        max_points=s.serving_max_points)
                out = run_search(exp, out_dir, console)
                break
            except Exception as exc:  # noqa: BLE001 - report and go on with the next search
                errors.append(f"{type(exc).__name__}: {exc}")
                log(f"serving: search {name} failed: {error_line(errors[-1])}")
                out = {"error": errors[-1]}
        if errors:
            out["errors_before"] = errors if "error" not in out else errors[:-1]
            out["retried"] = "error" not in out
        out["call_mode"] = call_mode
        res[key] = out
        return out

    for label, backend, start, factor in (
            ("sleep", "sleep", s.serving_sleep_start_rate, s.serving_sleep_pipelined_start_factor),
            ("onnx", "onnxruntime", s.serving_onnx_start_rate, s.serving_onnx_pipelined_start_factor)):
        b = one(f"{label}-blocking", backend, "blocking", start)
        # The pipelined search starts at factor x the blocking result (where it is expected to hold).
        found = b.get("sustainable_rate_bps")
        p = one(f"{label}-pipelined", backend, "pipelined", round(found * factor) if found else start)
        res[f"{label}_ratio"] = ratio(p.get("sustainable_rate_bps"), b.get("sustainable_rate_bps"))
        res[f"{label}_ratio_bounds"] = scaling_bounds(b, p)
    d = s.serving_sleep_delay_ms
    res["sleep_blocking_cap_bps"] = 1000.0 / d  # 1 / delay: the ceiling without any overhead
    res["goal"] = {"sleep_ratio_min": PIPELINING_GOAL}
    # Judged only when both searches bracketed their capacity (else, e.g. with --quick's single
    # point, the ratio is just the start factor).
    res["goal_met"] = None if res["sleep_ratio_bounds"] is None else (res["sleep_ratio"] or 0) >= PIPELINING_GOAL
    return res


# ----------------------------------------------------------------------------------------------
# 5d. accuracy of the sleep backend
# ----------------------------------------------------------------------------------------------

SLEEP_ACCURACY_DELAYS_MS = (0.3, 5.0, 50.0)


def sleep_accuracy(s: BenchSettings, log=print) -> dict:
    """How closely ``create_scorer("sleep", "ffnn", delay_ms=d)`` takes ``d`` per call."""
    x = np.zeros((1, *MODELS[MODEL].input_shape), dtype=np.float32)
    res: dict = {"calls": s.serving_sleep_accuracy_calls, "delays": {}}
    for delay in SLEEP_ACCURACY_DELAYS_MS:
        log(f"serving: sleep backend, delay {delay:g} ms, {s.serving_sleep_accuracy_calls} calls")
        scorer = create_scorer("sleep", MODEL, delay_ms=delay)
        try:
            took = []
            for _ in range(s.serving_sleep_accuracy_calls):
                t0 = time.perf_counter_ns()
                scorer.score(x)
                took.append(time.perf_counter_ns() - t0)
        finally:
            scorer.close()
        over_us = (np.asarray(took, dtype=np.float64) - delay * 1e6) / 1e3
        res["delays"][f"{delay:g}"] = {
            "delay_ms": delay, "overshoot_us": {"min": float(over_us.min()), "p50": percentile(over_us, 50),
                                                "p99": percentile(over_us, 99), "max": float(over_us.max())},
            "never_early": bool(over_us.min() >= 0)}
    return res


def run(bootstrap: str, out_dir: Path, s: BenchSettings, console=None, log=print) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {}
    for key, fn in (("sleep_accuracy", lambda: sleep_accuracy(s, log)),
                    ("unary", lambda: unary(out_dir, s, log)),
                    ("batching", lambda: batching(out_dir, s, log)),
                    ("pipelining", lambda: pipelining(bootstrap, out_dir, s, console, log))):
        try:
            res[key] = fn()
        except Exception as exc:  # noqa: BLE001 - one measurement failing must not lose the others
            log(f"serving: {key} failed: {error_line(f'{type(exc).__name__}: {exc}')}")
            res[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    return res
