"""Part 4: protobuf raw tensor vs crayfish-json, encode + decode of a ResNet50 batch of 8.

Definitions: see :mod:`benchmarks` (part 4).
"""

from __future__ import annotations

import gc
import json
import statistics
import time

import numpy as np

from benchmarks.common import BenchSettings, ratio
from crayfish.codec import get_codec
from crayfish.payloads import synthetic_pool
from crayfish.tensor import from_tensor, to_tensor
from crayfish.v1 import batch_pb2

RATIO_GOAL = 1000.0
ITEM_SHAPE = (224, 224, 3)


def resnet_batches(batch: int, count: int, seed: int) -> list:
    """``count`` distinct ResNet50 input batches ``[batch, 224, 224, 3]`` as (array, DataBatch)."""

    pool = synthetic_pool(ITEM_SHAPE, "float32", batch, count, seed)
    out = []
    now = time.time_ns()
    for i in range(count):
        x = np.ascontiguousarray(pool[i])
        msg = batch_pb2.DataBatch(batch_id=f"bench-{i}", run_id="bench", sequence=i, intended_ns=now,
                                  created_ns=now, model="resnet50")
        to_tensor(x, msg.input)
        out.append((x, msg))
    return out


def measure(name: str, batches: list, reps: int, warmup: int = 0) -> dict:
    """Encode + decode, cycling over ``batches`` (distinct contents: a codec that memoizes by
    content must not be timed on its cache); ``warmup`` untimed rounds first."""

    codec = get_codec(name)
    enc, dec, tot = [], [], []
    size = header_bytes = 0
    same = True
    for i in range(warmup):  # untimed: first-touch page faults of the big buffers, lazy set-up
        value, headers = codec.encode_batch(batches[i % len(batches)][1])
        codec.decode_batch(value, headers)
    for i in range(warmup, warmup + reps):
        x, msg = batches[i % len(batches)]
        gc.collect()
        t0 = time.perf_counter()
        value, headers = codec.encode_batch(msg)
        t1 = time.perf_counter()
        back = codec.decode_batch(value, headers)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        tot.append(t2 - t0)
        size = len(value)
        header_bytes = sum(len(k) + len(v) for k, v in headers or [])
        y = from_tensor(back.input)
        same = same and y.shape == x.shape and bool(np.array_equal(y, x)) and back.batch_id == msg.batch_id
    # the same tensor once more: what a codec that memoizes by content costs on a repeat
    t0 = time.perf_counter()
    codec.encode_batch(batches[(warmup + reps - 1) % len(batches)][1])
    repeat = time.perf_counter() - t0
    return {"codec": name, "reps": reps, "warmup_reps": warmup, "distinct_batches": len(batches),
            "encode_ms_median": statistics.median(enc) * 1e3,
            "decode_ms_median": statistics.median(dec) * 1e3, "total_ms_median": statistics.median(tot) * 1e3,
            "total_ms_all": [round(t * 1e3, 3) for t in tot], "value_bytes": size, "header_bytes": header_bytes,
            "round_trip_equal": same, "encode_ms_same_tensor_again": repeat * 1e3}


def naive_json_round_trip(x: np.ndarray, created_ms: int) -> tuple[float, float, bool]:
    """The original message done the plain Python way (what the issue's ~1.2 s anchor measures):
    str() of every value joined with commas, json.dumps; json.loads, float() of every value."""

    t0 = time.perf_counter()
    rows = x.reshape(x.shape[0], -1)
    doc = {"creationTimestamp": created_ms, "dataPointSz1": rows.shape[0], "dataPointSz2": rows.shape[1],
           "dataPoint": "".join(f"{v}," for v in rows.ravel().tolist()), "prediction": None}
    value = json.dumps(doc, separators=(",", ":")).encode()
    t1 = time.perf_counter()
    back = json.loads(value)
    y = np.array([float(v) for v in back["dataPoint"].split(",")[:-1]], dtype=np.float32).reshape(x.shape)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, bool(np.array_equal(y, x))


def run(s: BenchSettings, batch: int | None = None, log=print) -> dict:
    batch = batch or s.codec_batch
    json_warmup = 0 if s.quick else 1
    # protobuf keeps nothing between calls: one batch, re-encoded (with more big live buffers in
    # the process, the 4.8 MB output allocations can land on fresh pages, ~3 ms of page faults
    # per encode on a VM: allocator state, not codec cost)
    single = resnet_batches(batch, 1, s.seed)
    shape = list(single[0][0].shape)
    log(f"codec: protobuf x{s.protobuf_reps}, crayfish-json x{s.json_reps} on float32 {shape}")
    pb = measure("protobuf", single, s.protobuf_reps, warmup=3)
    # crayfish-json memoizes formatted tensors by content: every timed round gets a tensor of its own
    batches = resnet_batches(batch, s.json_reps + json_warmup, s.seed)
    js = measure("crayfish-json", batches, s.json_reps, warmup=json_warmup)
    r = ratio(js["total_ms_median"], pb["total_ms_median"])
    naive = [naive_json_round_trip(batches[i % len(batches)][0], 0) for i in range(s.json_reps)]
    naive_ms = statistics.median(e + d for e, d, _ in naive) * 1e3
    r_naive = ratio(naive_ms, pb["total_ms_median"])
    return {"input": {"model": "resnet50", "shape": shape, "dtype": "float32", "raw_bytes": single[0][0].nbytes,
                      "values": "uniform [0, 1), seed %d; crayfish-json: a distinct batch per round" % s.seed},
            "protobuf": pb, "crayfish_json": js, "ratio_json_to_protobuf": r,
            "naive_python_json": {"total_ms_median": naive_ms,
                                  "encode_ms_median": statistics.median(e for e, _, _ in naive) * 1e3,
                                  "decode_ms_median": statistics.median(d for _, d, _ in naive) * 1e3,
                                  "round_trip_equal": all(ok for _, _, ok in naive)},
            "ratio_naive_json_to_protobuf": r_naive,
            "goal": {"ratio_min": RATIO_GOAL,
                     "against": "the naive Python JSON round trip (the issue's ~1.2 s anchor)"},
            "goal_met": (r_naive or 0) >= RATIO_GOAL}
