"""Part 1: worker CPU per batch (drain of a pre-filled topic) against a bare ONNX Runtime call.

Definitions: see :mod:`benchmarks` (part 1).
"""

from __future__ import annotations

import gc
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

from benchmarks.common import (
    BenchSettings,
    TopicCounter,
    percentile,
    prefill,
    ratio,
    wait_until,
)
from crayfish.codec import get_codec
from crayfish.host.procs import Service
from crayfish.kafka import (
    RunTopics,
    consumer_lag,
    create_topics,
    delete_topics,
    wait_group_assigned,
)
from crayfish.payloads import synthetic_pool
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2
from serving.embedded import create_scorer
from serving.models import MODELS, build_model, default_models_dir, model_paths
from sps_workers import ENGINES
from sps_workers.scoring_op import ScoringOperator
from sps_workers.settings import WorkerSettings

MODEL = "ffnn"
ORT_OPTIONS = {"intra_op_threads": 1, "inter_op_threads": 1}


def input_array(seed: int) -> np.ndarray:
    """The first batch of the generator's synthetic pool for the FFNN, batch size 1: [1, 1, 784]."""

    spec = MODELS[MODEL]
    return np.ascontiguousarray(synthetic_pool(spec.input_shape, spec.input_dtype, 1, 1, seed)[0])


def _cpu_loop(fn, n: int) -> dict:
    """CPU and wall time per call of ``fn`` over a loop of ``n`` calls."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    th0 = time.thread_time()
    for _ in range(n):
        fn()
    th1 = time.thread_time()
    c1, t1 = time.process_time(), time.perf_counter()
    return {"calls": n, "cpu_us_per_call": (c1 - c0) / n * 1e6, "thread_cpu_us_per_call": (th1 - th0) / n * 1e6,
            "wall_us_per_call": (t1 - t0) / n * 1e6}


def _latency(fn, n: int) -> dict:
    lat = np.empty(n, dtype=np.int64)
    pc = time.perf_counter_ns
    gc.collect()
    for i in range(n):
        t = pc()
        fn()
        lat[i] = pc() - t
    us = lat / 1e3
    return {"calls": n, "p50_us": percentile(us, 50), "p99_us": percentile(us, 99), "mean_us": float(us.mean())}


def bare_onnxruntime(onnx_path: Path, x: np.ndarray, calls: int, warmup: int) -> dict:
    """A plain InferenceSession with the worker's options on input ``x``."""

    spec = MODELS[MODEL]
    so = ort.SessionOptions()
    so.intra_op_num_threads = ORT_OPTIONS["intra_op_threads"]
    so.inter_op_num_threads = ORT_OPTIONS["inter_op_threads"]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    outs, feed = [spec.output_name], {spec.input_name: x}

    def call():
        sess.run(outs, feed)

    for _ in range(warmup):
        call()
    res = {"api": "onnxruntime.InferenceSession.run", "onnxruntime_version": ort.__version__,
           "session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1,
                               "execution_mode": "sequential", "graph_optimization_level": "all"},
           "input_shape": list(x.shape),
           "latency": _latency(call, calls), **_cpu_loop(call, calls)}
    sess = None  # release the session before the next part
    return res


def scorer_and_operator(models_dir: Path, x: np.ndarray, value: bytes, calls: int, warmup: int) -> dict:
    """Breakdown: the serving scorer's ``score`` and the whole scoring operator on one record."""

    out: dict = {}
    scorer = create_scorer("onnxruntime", MODEL, models_dir=models_dir, **ORT_OPTIONS)
    try:
        def score():
            scorer.score(x)

        for _ in range(warmup):
            score()
        out["scorer_score"] = {"api": "serving.embedded scorer.score", **_cpu_loop(score, calls)}
        try:
            op = ScoringOperator(get_codec("protobuf"), scorer, MODEL, MODELS[MODEL].input_shape,
                                 "bench-0", engine="kafka")
            ts = int(time.time() * 1000)

            def process():
                op.process(value, None, ts, "bench-input", 0, 0)

            for _ in range(warmup):
                process()
            out["scoring_operator"] = {"api": "sps_workers.scoring_op.ScoringOperator.process "
                                              "(decode + score + encode, protobuf)",
                                       **_cpu_loop(process, calls)}
        except Exception as exc:  # noqa: BLE001 - a breakdown line, not the measurement
            out["scoring_operator"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        scorer.close()
    return out


def _thread_times(pid: int) -> tuple[float, dict[int, float]]:
    p = psutil.Process(pid)
    t = p.cpu_times()
    return t.user + t.system, {th.id: th.user_time + th.system_time for th in p.threads()}


def run(bootstrap: str, out_dir: Path, s: BenchSettings, log=print) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    models_dir = Path(default_models_dir())
    build_model(MODEL, models_dir, seed=s.seed)
    x = input_array(s.seed)
    n = s.drain_n
    run_id = "bench" + uuid.uuid4().hex[:6]
    topics = RunTopics.for_run(run_id)
    create_topics(bootstrap, topics, partitions=1)
    result: dict = {"config": {"model": MODEL, "backend": "onnxruntime", "backend_options": ORT_OPTIONS,
                               "batch_size": 1, "parallelism": 1, "codec": "protobuf", "engine": "kafka",
                               "records": n, "input_partitions": 1, "input_shape": list(x.shape)}}
    try:
        log(f"efficiency: pre-filling {n:,} records")
        t = time.monotonic()
        sample_value = _prefill(bootstrap, topics.input, run_id, x, n)
        result["prefill_s"] = round(time.monotonic() - t, 2)
        result["record_bytes"] = len(sample_value)
        gc.collect()
        log("efficiency: bare ONNX Runtime call")
        result["bare_onnxruntime"] = bare_onnxruntime(model_paths(MODEL, models_dir).onnx, x, s.ort_calls,
                                                      s.ort_warmup_calls)
        result["breakdown"] = scorer_and_operator(models_dir, x, sample_value, s.ort_calls, s.ort_warmup_calls)
        bare = result["bare_onnxruntime"]
        result["engines"] = {}
        for engine in s.efficiency_engines:   # each drains the same pre-filled input, in its own group
            log(f"efficiency: the {engine} worker draining the input topic")
            drained = _drain(bootstrap, topics, run_id, models_dir, n, out_dir / engine, engine)
            drained["worker"]["ratio_cpu_to_bare_ort_cpu"] = ratio(drained["worker"]["cpu_us_per_batch"],
                                                                   bare["cpu_us_per_call"])
            result["engines"][engine] = drained
        result.update(result["engines"]["kafka"])   # the baseline worker: the goal below is its
        worker_res = result["worker"]
        result["ratio_worker_cpu_to_bare_ort_cpu"] = ratio(worker_res["cpu_us_per_batch"], bare["cpu_us_per_call"])
        result["ratio_worker_cpu_to_bare_ort_latency"] = ratio(worker_res["cpu_us_per_batch"],
                                                               bare["latency"]["p50_us"])
        op_cpu = (result["breakdown"].get("scoring_operator") or {}).get("cpu_us_per_call")
        # how much the Kafka side (client calls + librdkafka threads) adds to the in-process operator
        result["ratio_worker_cpu_to_scoring_operator_cpu"] = ratio(worker_res["cpu_us_per_batch"], op_cpu)
        result["goal"] = {"ratio_max": 3.0}
        result["goal_met"] = (result["ratio_worker_cpu_to_bare_ort_cpu"] or float("inf")) <= 3.0
    finally:
        delete_topics(bootstrap, topics)
    return result


def _prefill(bootstrap: str, topic: str, run_id: str, x, n: int) -> bytes:
    """``n`` records as the generator builds them (per-batch header + the pre-serialized tensor
    field) into partition 0 of ``topic``; returns one record's value."""
    tensor_part = batch_pb2.DataBatch(input=to_tensor(x)).SerializeToString()
    now = time.time_ns()

    def records():
        for i in range(n):
            bid = f"{run_id}-{i}"
            head = batch_pb2.DataBatch(batch_id=bid, run_id=run_id, sequence=i, intended_ns=now,
                                       created_ns=now, model=MODEL)
            yield bid.encode(), head.SerializeToString() + tensor_part

    prefill(bootstrap, topic, records(), partition=0)
    return next(iter(records()))[1]


def _drain(bootstrap: str, topics, run_id: str, models_dir: Path, n: int, out_dir: Path,
           engine: str = "kafka") -> dict:
    """An engine's worker (a core-environment one: kafka, go, kafka-streams) drains the pre-filled
    input into output topics of its own: its CPU (per thread) and wall time per batch."""
    out_dir.mkdir(parents=True, exist_ok=True)
    group = f"crayfish-{run_id}-{engine}"
    output, dead = f"{topics.output}-{engine}", f"{topics.dead_letter}-{engine}"
    create_topics(bootstrap, RunTopics(topics.input, output, dead, ""), partitions=1, only=[output, dead])
    ws = WorkerSettings(bootstrap=bootstrap, input_topic=topics.input, output_topic=output,
                        dead_letter_topic=dead, consumer_group=group, codec="protobuf",
                        model=MODEL, backend="onnxruntime", backend_options=ORT_OPTIONS,
                        models_dir=str(models_dir), parallelism=1, worker_id=engine)
    (out_dir / "worker.json").write_text(ws.model_dump_json(indent=2))
    counter = TopicCounter(bootstrap, [output, dead])
    # built before the clock starts (the Go and Java workers build once, cached)
    worker = Service(f"{engine}-worker", ["-m", ENGINES[engine].module, "--config", f"@{out_dir / 'worker.json'}"],
                     out_dir / "worker.log")
    try:
        wait_group_assigned(bootstrap, group, 1, 1, [worker], timeout_s=600)
        cpu0, th0 = _thread_times(worker.proc.pid)
        t0 = time.perf_counter()
        done0 = counter.count()
        wait_until(lambda: counter.count() >= n, timeout_s=max(120.0, n / 100), interval_s=0.02,
                   check=worker.check_alive, what=f"{n} output records")
        t1 = time.perf_counter()
        cpu1, th1 = _thread_times(worker.proc.pid)
        pid = worker.proc.pid
        worker.check_alive()
    finally:
        counter.close()
        worker.stop()
        delete_topics(bootstrap, RunTopics(topics.input, output, dead, ""), only=[output, dead])
    processed, wall, cpu = n - done0, t1 - t0, cpu1 - cpu0
    main0, main1 = th0.get(pid, 0.0), th1.get(pid, 0.0)
    deltas = sorted(((tid, th1[tid] - th0.get(tid, 0.0)) for tid in th1), key=lambda kv: -kv[1])
    other = sum(d for tid, d in deltas if tid != pid)
    return {"worker_settings": ws.model_dump(mode="json"),
            # committed-offset lag after the stop (the worker commits on shutdown): should be 0
            "final_committed_lag": consumer_lag(bootstrap, group, topics.input),
            "worker": {
                "batches_measured": processed, "already_done_at_start": done0, "wall_s": wall, "cpu_s": cpu,
                "cpu_us_per_batch": cpu / processed * 1e6,
                "main_thread_cpu_us_per_batch": (main1 - main0) / processed * 1e6,
                "other_threads_cpu_us_per_batch": other / processed * 1e6,
                "threads": len(th1),
                "top_threads_cpu_s": [{"tid": tid, "main": tid == pid, "cpu_s": round(d, 4)} for tid, d in deltas[:6]],
                "drain_rate_bps": processed / wall,
                "cpu_utilisation": cpu / wall,
            }}
