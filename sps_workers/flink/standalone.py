"""``python -m sps_workers.flink.standalone --config ... --count N``: the job without Kafka (paper §6.2).

The same scoring operator (functions.ScoringFunction, same parallelism, bundle and chaining
options) between an in-job source and a discarding sink, to measure what Kafka costs the Flink
job. The source emits ``N`` DataBatch records built like the generator builds them (the seeded
synthetic pool of crayfish.payloads, cycled), already encoded, as the same rows the
Kafka table source produces (key, value, headers, timestamp, partition, offset), so the Python
workers receive exactly what they receive from Kafka. It is a collection source (parallelism 1,
its elements travel inside the job); the sink is Flink's DiscardingSink.

Throughput = records / (last record finished - first record started), and the same after the
warm-up (first quarter of the records), from the stamps each scoring subtask keeps and writes when
it closes: the window ScoringFacts.worker_receive_ns / worker_send_ns give in a Kafka run (see
:func:`throughput`). Prints one JSON document (and writes it to --out).

The config is a WorkerSettings document; its Kafka fields may be left out (nothing connects).
"""

from __future__ import annotations

from sps_workers.flink import protocompat

protocompat.install()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from crayfish.codec import get_codec  # noqa: E402
from crayfish.payloads import synthetic_pool  # noqa: E402
from crayfish.tensor import to_tensor  # noqa: E402
from crayfish.v1 import batch_pb2  # noqa: E402
from serving.models import MODELS  # noqa: E402
from sps_workers.flink.options import FlinkOptions  # noqa: E402
from sps_workers.options import EngineOptionsError  # noqa: E402
from sps_workers.settings import WorkerSettings  # noqa: E402

PLACEHOLDERS = {"bootstrap": "none:0", "input_topic": "standalone-input", "output_topic": "standalone-output",
                "dead_letter_topic": "standalone-dlq", "consumer_group": "standalone"}


def build_records(model: str, codec_name: str, count: int, batch_size: int = 1, seed: int = 42,
                  pool_size: int = 64, run_id: str = "standalone") -> list[tuple[bytes, bytes, list]]:
    """``count`` encoded DataBatch records (key, value, headers), tensors cycled over the seeded
    pool of the generator. Shared with benchmarks/flink_standalone.py (the Kafka pre-fill)."""
    spec = MODELS[model]
    codec = get_codec(codec_name)
    pool = synthetic_pool(spec.input_shape, spec.input_dtype, batch_size, pool_size, seed)
    tensors = [to_tensor(pool[i]) for i in range(len(pool))]
    now = time.time_ns()
    out = []
    for i in range(count):
        bid = f"{run_id}-{i}"
        b = batch_pb2.DataBatch(batch_id=bid, run_id=run_id, sequence=i, intended_ns=now, created_ns=now,
                                model=model)
        b.input.CopyFrom(tensors[i % len(tensors)])
        value, headers = codec.encode_batch(b)
        out.append((bid.encode(), value, list(headers or [])))
    return out


def run(settings: WorkerSettings, count: int, batch_size: int = 1, seed: int = 42, pool_size: int = 64) -> dict:
    # PyFlink and the job's modules (which import it) exist only in the flink environment; the
    # functions above also run in the core one (benchmarks/flink_standalone.py).
    from pyflink.common import Row
    from pyflink.common.time import Instant
    from pyflink.datastream.connectors.base import Sink
    from pyflink.java_gateway import get_gateway

    from sps_workers.flink.functions import INPUT_TYPE
    from sps_workers.flink.job import make_env, scoring_stream

    opts = FlinkOptions.parse(settings.engine_options, settings.parallelism)
    _, score_p, sink_p = opts.parallelisms(settings.parallelism)
    t_build = time.monotonic()
    now = Instant.of_epoch_milli(int(time.time() * 1000))
    rows = [Row(k, v, dict(h) if h else None, now, 0, i)
            for i, (k, v, h) in enumerate(build_records(settings.model, settings.codec, count, batch_size,
                                                         seed, pool_size))]
    build_s = time.monotonic() - t_build
    stats_dir = tempfile.mkdtemp(prefix="crayfish-flink-standalone-")
    try:
        env, _ = make_env(settings, opts, name=f"crayfish-{settings.worker_id}-standalone")
        ds = env.from_collection(rows, type_info=INPUT_TYPE)
        del rows
        scored = scoring_stream(ds, settings, opts, stats_dir=stats_dir)
        discard = Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
        scored.sink_to(discard).name("discard").set_parallelism(sink_p)
        t0 = time.monotonic()
        env.execute(f"crayfish-{settings.worker_id}-standalone")
        wall = time.monotonic() - t0
        subtasks = [json.loads(p.read_text()) for p in sorted(Path(stats_dir).glob("scoring-*.json"))]
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
    done_ns = sorted(t for st in subtasks for t in st["done_ns"])
    first = min((st["first_ns"] for st in subtasks if st["first_ns"]), default=None)
    return {
        "engine": "flink", "mode": "standalone", "model": settings.model, "codec": settings.codec,
        "batch_size": batch_size, "count": count, "scored": len(done_ns),
        "parallelism": {"source": 1, "scoring": score_p, "sink": sink_p},
        "engine_options": opts.model_dump(),
        **throughput(first, done_ns),
        "job_wall_s": wall, "build_records_s": build_s,
        "subtasks": [{"subtask": st["subtask"], "pid": st["pid"], "count": len(st["done_ns"])} for st in subtasks],
    }


def throughput(first_ns: int | None, done_ns: list[int], warmup: float = 0.25) -> dict:
    """Records per second: over all (first started -> last finished), and after the warm-up (the
    first quarter of completions, as the paper): (n - k) / (t[n-1] - t[k-1]), k = n // 4. Shared with
    benchmarks/flink_standalone.py so both modes use the same definitions."""
    n = len(done_ns)
    if not n or first_ns is None:
        return {"throughput_bps": None, "window_s": 0.0, "steady_throughput_bps": None}
    window = (done_ns[-1] - first_ns) / 1e9
    k = max(1, int(n * warmup))
    steady = (done_ns[-1] - done_ns[k - 1]) / 1e9
    per_s = [0] * (int((done_ns[-1] - first_ns) // 1_000_000_000) + 1)
    for t in done_ns:
        per_s[int((t - first_ns) // 1_000_000_000)] += 1
    return {"throughput_bps": n / window if window > 0 else None, "window_s": window,
            "steady_throughput_bps": (n - k) / steady if steady > 0 else None, "steady_window_s": steady,
            "per_second": per_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sps_workers.flink.standalone",
                                description="The flink scoring job between an in-job source and a discarding sink.")
    p.add_argument("--config", required=True, help="WorkerSettings as JSON, or @path (Kafka fields optional)")
    p.add_argument("--count", type=int, required=True, help="records the source emits")
    p.add_argument("--batch-size", type=int, default=1, help="data points per DataBatch (default 1)")
    p.add_argument("--seed", type=int, default=42, help="seed of the synthetic pool (default 42)")
    p.add_argument("--pool-size", type=int, default=64, help="distinct batches cycled (default 64)")
    p.add_argument("--out", help="also write the JSON result here")
    a = p.parse_args(argv)
    if a.count < 1 or a.batch_size < 1:
        p.error("--count and --batch-size must be >= 1")
    raw = a.config
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text()
    doc = {**PLACEHOLDERS, **json.loads(raw)}
    try:
        settings = WorkerSettings.model_validate(doc)
        FlinkOptions.parse(settings.engine_options, settings.parallelism)
    except (ValueError, EngineOptionsError) as exc:
        print(f"flink standalone: bad config: {exc}", file=sys.stderr)
        return 2
    # A folder of its own for what the gateway JVM and its mini-cluster leave in java.io.tmpdir
    # (loopback.use_in_gateway passes tempfile's folder on): Flink does not clean it on exit.
    tempfile.tempdir = tempfile.mkdtemp(prefix="crayfish-flink-standalone-")
    try:
        result = run(settings, a.count, a.batch_size, a.seed, a.pool_size)
    finally:
        shutil.rmtree(tempfile.tempdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if a.out:
        Path(a.out).write_text(text)
    print(text, flush=True)
    return 0 if result["scored"] == a.count else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
