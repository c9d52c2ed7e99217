"""The Spark executor's hop spans reach the span file before its Python worker can be killed.

Spark ends idle Python workers with a signal, so no exit hook runs: the mapInArrow function
(sps_workers/spark/scoring.py) must write the spans of a partition out before it returns. Here the
real function runs in the spark environment's interpreter on Arrow batches shaped like the Kafka
source's, the background flush is held off, and the process kills itself with SIGKILL as soon as
the partition is done: every traced record's spans must be on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap

from crayfish.host.envs import python_for
from crayfish.host.paths import REPO_ROOT
from observability.hops import read_spans
from observability.names import BATCH_ID, SPANS_DIR_ENV
from sps_workers import ENGINES

TRACED = 3      # records carrying a sampled traceparent
UNTRACED = 2    # records without one

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys

    import pyarrow as pa

    from crayfish.codec import get_codec
    from crayfish.payloads import synthetic_pool
    from crayfish.tensor import to_tensor
    from crayfish.v1 import batch_pb2
    from observability import spanlog
    from observability.spanlog import new_span_id, new_trace_id, traceparent
    from sps_workers.settings import WorkerSettings
    from sps_workers.spark.scoring import make_scorer

    spanlog.FLUSH_S = 3600.0  # only an explicit flush writes spans in this process
    traced, untraced = int(sys.argv[1]), int(sys.argv[2])
    settings = WorkerSettings(bootstrap="127.0.0.1:1", input_topic="in", output_topic="out",
                              dead_letter_topic="dlq", consumer_group="g", model="ffnn", backend="noop",
                              worker_id="spark")
    x = synthetic_pool((1, 784), "float32", 1, 1, 0)[0]
    codec = get_codec("protobuf")
    cols = {c: [] for c in ("key", "value", "headers", "append_ms", "topic", "partition", "offset")}
    parents = {}
    for i in range(traced + untraced):
        bid = f"run-{i}"
        batch = batch_pb2.DataBatch(batch_id=bid, run_id="run", sequence=i, model="ffnn", input=to_tensor(x))
        value, _ = codec.encode_batch(batch)
        headers = None
        if i < traced:
            trace_id, span_id = new_trace_id(), new_span_id()
            parents[bid] = [f"{trace_id:032x}", f"{span_id:016x}"]
            headers = [{"key": "traceparent", "value": traceparent(trace_id, span_id).encode()}]
        for c, v in zip(cols, (bid.encode(), value, headers, 1_700_000_000_000 + i, "in", 0, i)):
            cols[c].append(v)
    score = make_scorer(settings.model_dump_json(), chunk=2)
    out = [row for rb in score(iter([pa.RecordBatch.from_pydict(cols)])) for row in rb.to_pylist()]
    print(json.dumps({"parents": parents, "out": [[r["topic"], [h["key"] for h in r["headers"] or []]]
                                                  for r in out]}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # what Spark does to an idle Python worker: no exit hooks
""")


def test_spark_partition_flushes_its_spans_before_it_returns(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env[SPANS_DIR_ENV] = str(tmp_path)
    proc = subprocess.run([python_for(ENGINES["spark"].environment), "-c", SCRIPT, str(TRACED), str(UNTRACED)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # every record scored to the output topic; the traced ones carry the trace on
    assert [topic for topic, _ in result["out"]] == ["out"] * (TRACED + UNTRACED)
    assert [("traceparent" in keys) for _, keys in result["out"]] == [True] * TRACED + [False] * UNTRACED

    spans = read_spans(tmp_path)
    assert len(spans) == 5 * TRACED
    process = {s["attributes"][BATCH_ID]: s for s in spans if s["kind"] == "CONSUMER"}
    assert set(process) == set(result["parents"])
    for bid, (trace_id, parent_id) in result["parents"].items():
        assert (process[bid]["trace_id"], process[bid]["parent_id"]) == (trace_id, parent_id)
        children = sorted(s["name"] for s in spans if s["parent_id"] == process[bid]["span_id"])
        assert children == ["crayfish.decode", "crayfish.encode", "crayfish.score", "send out"]
