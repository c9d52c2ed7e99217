"""Part 2: headroom of the harness itself -- the generator alone and the collector alone.

Definitions: see :mod:`benchmarks` (part 2).
"""

from __future__ import annotations

import gc
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import BenchSettings, prefill, ratio
from crayfish.kafka import RunTopics, create_topics, delete_topics
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2
from services.collector.collector import Collector, CollectorSettings
from services.generator.generator import run as run_generator
from services.generator.settings import GeneratorSettings
from services.generator.workloads import parse_workload
from serving.models import MODELS

MODEL = "ffnn"
RATE_TOLERANCE = 0.01  # goal: achieved within 1 % of the target


def generator_alone(bootstrap: str, out_dir: Path, rate: float, s: BenchSettings, log=print) -> dict:
    """Constant rate ``rate`` into a fresh topic nobody reads; 1, 2, ... processes until one holds."""

    spec = MODELS[MODEL]
    attempts = []
    needed = None
    for procs in range(1, max(1, s.max_gen_processes) + 1):
        run_id = "benchgen" + uuid.uuid4().hex[:6]
        topics = RunTopics.for_run(run_id)
        create_topics(bootstrap, topics, partitions=2)
        gs = GeneratorSettings(bootstrap=bootstrap, topic=topics.input, run_id=run_id, model=MODEL,
                               item_shape=list(spec.input_shape), dtype=spec.input_dtype, batch_size=1,
                               codec="protobuf",
                               workload=parse_workload({"type": "constant", "rate": float(rate),
                                                        "duration_s": s.gen_duration_s}),
                               seed=s.seed, processes=procs)
        d = out_dir / f"generator-p{procs}"
        log(f"harness: generator alone at {rate:,.0f}/s with {procs} process(es)")
        gc.collect()
        t = time.monotonic()
        try:
            rep = run_generator(gs, d)
        finally:
            delete_topics(bootstrap, topics)
        held = abs((rep.get("achieved_over_target") or 0.0) - 1.0) <= RATE_TOLERANCE and not rep["delivery_failures"]
        attempts.append({"processes": procs, "target_rate_bps": rep["target_rate_bps"],
                         "achieved_rate_bps": rep["achieved_rate_bps"],
                         "achieved_over_target": rep.get("achieved_over_target"), "sent": rep["sent"],
                         "produced": rep["produced"], "delivery_failures": rep["delivery_failures"],
                         "lateness_ms": rep["lateness_ms"], "held": held, "wall_s": round(time.monotonic() - t, 2),
                         "settings": gs.model_dump(mode="json"), "dir": str(d)})
        if held:
            needed = procs
            break
    best = next((a for a in attempts if a["held"]), None) or max(
        attempts, key=lambda a: a["achieved_over_target"] or 0.0)
    return {"target_rate_bps": rate, "duration_s": s.gen_duration_s, "input_partitions": 2,
            "processes_needed": needed, "result": {k: best[k] for k in (
                "processes", "achieved_rate_bps", "achieved_over_target", "lateness_ms", "held")},
            "attempts": attempts, "goal": {"achieved_over_target_within": RATE_TOLERANCE},
            "goal_met": needed is not None}


class _TimedCollector(Collector):
    """A Collector whose end of consumption is stamped (just before it writes its files)."""

    consume_end: float | None = None

    def _write(self):
        self.consume_end = time.perf_counter()
        return super()._write()


def collector_alone(bootstrap: str, out_dir: Path, s: BenchSettings, log=print) -> dict:
    n = s.collector_n
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = "benchcol" + uuid.uuid4().hex[:6]
    topics = RunTopics.for_run(run_id)
    create_topics(bootstrap, topics, partitions=2)
    try:
        y = np.random.default_rng(s.seed).random((1, 10), dtype=np.float32)
        now = time.time_ns()
        now_ms = now // 1_000_000

        def records():
            for i in range(n):
                bid = f"{run_id}-{i}"
                sb = batch_pb2.ScoredBatch(batch_id=bid, run_id=run_id, sequence=i, intended_ns=now + i,
                                           created_ns=now + i, model=MODEL, input_append_ms=now_ms)
                to_tensor(y, sb.output)
                f = sb.facts
                f.backend, f.worker_id, f.engine = "onnxruntime", "kafka-0", "kafka"
                f.worker_receive_ns, f.worker_send_ns = now + 1000, now + 2000
                f.decode_ns, f.inference_ns, f.encode_ns = 20_000, 60_000, 10_000
                yield bid.encode(), sb.SerializeToString()

        log(f"harness: pre-filling {n:,} ScoredBatch records for the collector")
        prefill(bootstrap, topics.output, records())
        seq = np.arange(n, dtype=np.int64)
        pq.write_table(pa.table({"batch_id": [f"{run_id}-{i}" for i in range(n)], "sequence": seq,
                                 "intended_ns": now + seq, "created_ns": now + seq}), out_dir / "sent.parquet")
        cs = CollectorSettings(bootstrap=bootstrap, output_topic=topics.output,
                               dead_letter_topic=topics.dead_letter, input_topic=topics.input,
                               worker_group=None, codec="protobuf",
                               expect_file=str(out_dir / "sent.parquet"), drain_idle_s=10.0)
        log("harness: collector alone")
        gc.collect()
        col = _TimedCollector(cs, out_dir)
        t0 = time.perf_counter()
        report = col.run()
        t1 = time.perf_counter()
    finally:
        delete_topics(bootstrap, topics)
    wall = t1 - t0
    consume = (col.consume_end or t1) - t0
    return {"records": n, "output_partitions": 2, "settings": cs.model_dump(mode="json"),
            "collector_report": report, "wall_s": wall, "consume_s": consume,
            "rate_bps": n / wall, "consume_rate_bps": n / consume,
            "complete": report.get("scored") == n and report.get("missing") == 0}


def run(bootstrap: str, out_dir: Path, s: BenchSettings, sustainable_rate: float | None,
        rate_source: str, log=print) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    st = sustainable_rate if sustainable_rate else s.worker_rate
    source = rate_source if sustainable_rate else "--worker-rate (no search result)"
    r_gen = round(s.headroom_factor * st)
    res: dict = {"worker_sustainable_rate_bps": st, "worker_rate_source": source,
                 "headroom_factor_goal": s.headroom_factor}
    try:
        res["generator"] = generator_alone(bootstrap, out_dir, r_gen, s, log)
        ach = res["generator"]["result"]["achieved_rate_bps"]
        res["generator"]["headroom_x"] = ratio(ach, st)
    except Exception as exc:  # noqa: BLE001 - report and go on with the collector
        res["generator"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        res["collector"] = collector_alone(bootstrap, out_dir / "collector", s, log)
        res["collector"]["headroom_x"] = ratio(res["collector"]["rate_bps"], st)
        res["collector"]["goal_met"] = (res["collector"]["headroom_x"] or 0) >= s.headroom_factor
    except Exception as exc:  # noqa: BLE001
        res["collector"] = {"error": f"{type(exc).__name__}: {exc}"}
    return res
