"""Flink: Kafka in the loop vs the standalone job (paper §6.2) — what Kafka costs the Flink job.

``python -m benchmarks.flink_standalone --out DIR [--count N] [--parallelism P] [--bootstrap H:P]``

Both runs score the same ``N`` records (the generator's seeded FFNN pool, batch size 1, protobuf,
embedded ONNX Runtime with 1 intra-op thread — or ``--backend sleep``) with the same job options:

- **kafka**: the records are pre-filled into a fresh input topic (``P`` partitions), then the flink
  worker starts (as the runner starts it) and drains them to the output topic. Completion times
  are the output records' ScoringFacts.worker_send_ns (start: the first worker_receive_ns).
- **standalone**: ``python -m sps_workers.flink.standalone`` — the same scoring operator between an
  in-job source and a discarding sink; its scoring subtasks stamp the same two moments.

Throughput (both, :func:`sps_workers.flink.standalone.throughput`): after the warm-up (the first
quarter of the completions, as the paper) = (n - n/4) / (t_last - t_n/4), compared below; and over
all records (first started -> last finished), reported as ``overall``. The output rate by
LogAppendTime (ms resolution) is reported for the Kafka runs.

Goal: kafka ≥ 0.97 × standalone. Writes ``DIR/flink_standalone.json``. Each mode runs
``--repeat`` times, alternating (kafka, standalone, kafka, ...), and the medians are compared.

Hook into ``python -m benchmarks``: add "flink_standalone" to ``benchmarks.common.PARTS`` and in
``benchmarks/__main__.py`` call ``part("flink_standalone", lambda: flink_standalone.run(bootstrap,
out / "flink_standalone", count=..., log=log))`` next to the other parts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from benchmarks.common import TopicCounter, prefill, wait_until
from crayfish.codec import get_codec
from crayfish.host.envs import python_for
from crayfish.host.procs import Service
from crayfish.kafka import RunTopics, consumer_config, create_topics, delete_topics
from services.broker import launcher
from serving.models import build_model, default_models_dir
from sps_workers import ENGINES
from sps_workers.flink.standalone import build_records, throughput
from sps_workers.settings import WorkerSettings

MODEL = "ffnn"
ORT_OPTIONS = {"intra_op_threads": 1, "inter_op_threads": 1}
GOAL = 0.97


def _settings(bootstrap: str, topics, run_id: str, models_dir: Path, parallelism: int, ready: Path | None,
              engine_options: dict, backend: str, backend_options: dict):

    return WorkerSettings(bootstrap=bootstrap, input_topic=topics.input, output_topic=topics.output,
                          dead_letter_topic=topics.dead_letter, consumer_group=f"crayfish-{run_id}-flink",
                          model=MODEL, backend=backend, backend_options=backend_options,
                          models_dir=str(models_dir), parallelism=parallelism, worker_id="flink",
                          ready_file=str(ready) if ready else None, engine_options=engine_options)


def kafka_drain(bootstrap: str, out_dir: Path, count: int, parallelism: int, engine_options: dict, seed: int,
                backend: str = "onnxruntime", backend_options: dict | None = None, log=print) -> dict:

    run_id = "flinkbench" + uuid.uuid4().hex[:6]
    topics = RunTopics.for_run(run_id)
    create_topics(bootstrap, topics, partitions=parallelism)
    try:
        records = build_records(MODEL, "protobuf", count, seed=seed, run_id=run_id)
        t = time.monotonic()
        prefill(bootstrap, topics.input, ((k, v) for k, v, _ in records))
        prefill_s = time.monotonic() - t
        del records
        ws = _settings(bootstrap, topics, run_id, Path(default_models_dir()), parallelism,
                       out_dir / f"{run_id}.ready", engine_options, backend,
                       ORT_OPTIONS if backend_options is None else backend_options)
        cfg = out_dir / f"{run_id}.json"
        cfg.write_text(ws.model_dump_json(indent=2))
        counter = TopicCounter(bootstrap, [topics.output, topics.dead_letter])
        log(f"flink kafka: {count:,} records pre-filled in {prefill_s:.1f}s; starting the worker")
        svc = Service("flink-worker", ["-m", ENGINES["flink"].module, "--config", f"@{cfg}"],
                      out_dir / f"{run_id}.log", python=python_for("flink"))
        try:
            ENGINES["flink"].wait_ready(ws, parallelism, [svc], timeout_s=300)
            wait_until(lambda: counter.count() >= count, timeout_s=max(300.0, count / 50), interval_s=0.2,
                       check=svc.check_alive, what=f"{count} output records")
        finally:
            counter.close()
            svc.stop()
        codec = get_codec("protobuf")
        recv, send, append = [], [], []
        for m in _read_all(bootstrap, topics.output, count):
            s = codec.decode_scored(m.value(), m.headers())
            recv.append(s.facts.worker_receive_ns)
            send.append(s.facts.worker_send_ns)
            append.append(m.timestamp()[1])
        n = len(recv)
        append_window = (max(append) - min(append)) / 1e3
        return {"mode": "kafka", "count": count, "scored": n, "partitions": parallelism,
                **throughput(min(recv), sorted(send)),
                "throughput_by_append_bps": (n - 1) / append_window if append_window > 0 else None,
                "prefill_s": prefill_s, "worker_log": str(out_dir / f"{run_id}.log")}
    finally:
        delete_topics(bootstrap, topics)


def _read_all(bootstrap: str, topic: str, n: int, timeout_s: float = 120.0) -> list:

    c = Consumer(consumer_config(bootstrap, f"bench-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += [m for m in c.consume(1000, timeout=0.2) if not m.error()]
    c.close()
    return out


def standalone(out_dir: Path, count: int, parallelism: int, engine_options: dict, seed: int,
               backend: str = "onnxruntime", backend_options: dict | None = None, log=print) -> dict:

    cfg = {"model": MODEL, "backend": backend,
           "backend_options": ORT_OPTIONS if backend_options is None else backend_options,
           "models_dir": str(default_models_dir()), "parallelism": parallelism, "worker_id": "flink",
           "engine_options": engine_options}
    out = out_dir / f"standalone-{uuid.uuid4().hex[:6]}.json"
    log(f"flink standalone: {count:,} records")
    proc = subprocess.run([python_for("flink"), "-m", "sps_workers.flink.standalone", "--config", json.dumps(cfg),
                           "--count", str(count), "--seed", str(seed), "--out", str(out)],
                          capture_output=True, text=True, timeout=max(600, count / 20))
    if proc.returncode != 0:
        raise RuntimeError(f"standalone job failed ({proc.returncode}):\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}")
    res = json.loads(out.read_text())
    res.pop("subtasks", None)
    return res


def run(bootstrap: str, out_dir: Path, count: int = 20_000, parallelism: int = 1, engine_options: dict | None = None,
        repeat: int = 1, seed: int = 42, backend: str = "onnxruntime", delay_ms: float = 1.0, log=print) -> dict:
    """Both modes ``repeat`` times, alternating; backend ``onnxruntime`` (CPU-bound FFNN) or ``sleep``
    (``delay_ms`` per batch, spin 0: waits without CPU, so the host's cores are not the limit)."""

    out_dir.mkdir(parents=True, exist_ok=True)
    build_model(MODEL, default_models_dir(), seed=seed)
    engine_options = engine_options or {}
    runs = {"kafka": [], "standalone": []}
    bopts = ORT_OPTIONS if backend == "onnxruntime" else {"delay_ms": delay_ms, "spin_us": 0}
    for i in range(repeat):
        for mode in ("kafka", "standalone"):
            if mode == "kafka":
                r = kafka_drain(bootstrap, out_dir, count, parallelism, engine_options, seed, backend, bopts, log=log)
            else:
                r = standalone(out_dir, count, parallelism, engine_options, seed, backend, bopts, log=log)
            runs[mode].append(r)
            log(f"flink {mode} #{i + 1}: {r['steady_throughput_bps']:.0f} batches/s after warm-up "
                f"({r['throughput_bps']:.0f} over all)")

    def med(mode, key):
        return statistics.median(r[key] for r in runs[mode])

    k, s = med("kafka", "steady_throughput_bps"), med("standalone", "steady_throughput_bps")
    return {"config": {"model": MODEL, "batch_size": 1, "codec": "protobuf", "backend": backend,
                       "backend_options": bopts, "count": count, "parallelism": parallelism,
                       "engine_options": engine_options, "repeat": repeat, "seed": seed},
            "kafka_throughput_bps": k, "standalone_throughput_bps": s, "ratio_kafka_to_standalone": k / s,
            "overall": {"kafka_throughput_bps": med("kafka", "throughput_bps"),
                        "standalone_throughput_bps": med("standalone", "throughput_bps"),
                        "ratio_kafka_to_standalone": med("kafka", "throughput_bps") / med("standalone", "throughput_bps")},
            "goal": {"ratio_min": GOAL}, "goal_met": k / s >= GOAL, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flink_standalone", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for flink_standalone.json and the worker logs")
    p.add_argument("--count", type=int, default=20_000, help="records per run (default 20000)")
    p.add_argument("--parallelism", type=int, default=1, help="mp (and input partitions), default 1")
    p.add_argument("--engine-options", default="{}", help="flink engine_options as JSON (both runs)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each mode, alternating (default 1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", choices=("onnxruntime", "sleep"), default="onnxruntime",
                   help="onnxruntime (FFNN, CPU-bound) or sleep (--delay-ms per batch, no CPU)")
    p.add_argument("--delay-ms", type=float, default=1.0, help="sleep backend: delay per batch (default 1)")
    p.add_argument("--bootstrap", help="an existing Kafka cluster (default: start a local broker)")
    a = p.parse_args(argv)
    out = Path(a.out)

    def log(msg):
        print(f"[flink-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    handle = None
    bootstrap = a.bootstrap
    if bootstrap is None:
        handle = launcher.start()
        bootstrap = handle.bootstrap
    try:
        res = run(bootstrap, out, a.count, a.parallelism, json.loads(a.engine_options), a.repeat, a.seed,
                  a.backend, a.delay_ms, log=log)
    finally:
        if handle is not None:
            launcher.stop(handle)
    (out / "flink_standalone.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
