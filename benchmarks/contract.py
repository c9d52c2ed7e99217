"""Part 8: what the named-tensor contract costs per batch, against the single-tensor one, for the FFNN.

The same FFNN batches, embedded ONNX Runtime, through everything the contract touches on each side:

- generator: build and serialize the DataBatch (``BatchFactory.build``: one tensor in ``input``,
  or the same tensor under ``inputs["input_1"]``);
- worker: the scoring operator's whole ``process`` (decode, check, score, encode the ScoredBatch
  with ``output`` or ``outputs["output"]``, serialize);
- collector: decode the ScoredBatch (what it does with every batch; it reads the output tensor only
  of the sampled batches it checks, ``check_predictions``, 1 % by default).

Rounds alternate single / named (a block of ``calls`` batches each, ``rounds`` times), so drift of
the machine hits both alike; the result is the median over every batch of all rounds (robust to
the garbage collector's and the scheduler's pauses; each round's median is kept too), and
``overhead_pct`` = (named - single) / single. The issue's goal: within 5 %.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import BenchSettings
from crayfish.codec import get_codec
from crayfish.tensor import arrays_from, from_tensor
from services.generator.generator import BatchFactory
from services.generator.settings import GeneratorSettings, input_tensors
from serving.embedded import create_scorer
from serving.models import MODELS, build_model, default_models_dir
from sps_workers.scoring_op import ScoringOperator

MODEL = "ffnn"
GOAL_PCT = 5.0


def _factory(batch_size: int, named: bool, seed: int) -> BatchFactory:
    spec = MODELS[MODEL]
    return BatchFactory(GeneratorSettings(
        bootstrap="unused:1", topic="t", run_id="bench", model=MODEL, item_shape=list(spec.input_shape),
        tensors=input_tensors(spec) if named else [], batch_size=batch_size, seed=seed,
        workload={"type": "constant", "rate": 1, "duration_s": 1}))


def _block(factory: BatchFactory, op: ScoringOperator, calls: int, start: int, out: dict[str, list[float]]) -> None:
    """Per batch of ``calls``: seconds of the generator's build, the worker's process and the
    collector's decode, appended to ``out``."""
    codec = op.codec
    perf = time.perf_counter
    for seq in range(start, start + calls):
        t0 = perf()
        _, value, headers = factory.build(seq, 0, 0)
        t1 = perf()
        res = op.process(value, headers, 0, "in", 0, seq)
        t2 = perf()
        sb = codec.decode_scored(res.value, res.headers)     # what the collector does with every batch
        t3 = perf()
        out["generator"].append(t1 - t0)
        out["worker"].append(t2 - t1)
        out["collector"].append(t3 - t2)
        out["total"].append(t3 - t0)
    y = arrays_from(sb.outputs)["output"] if sb.outputs else from_tensor(sb.output)
    if y.shape[0] != factory.s.batch_size or sb.HasField("output") == bool(sb.outputs):
        raise RuntimeError(f"scored batch has {y.shape[0]} rows, output and outputs {sb.HasField('output')}, "
                           f"{len(sb.outputs)}")


def measure(batch_size: int, calls: int, rounds: int, seed: int, models_dir) -> dict:
    scorer = create_scorer("onnxruntime", MODEL, models_dir)
    try:
        op = ScoringOperator(get_codec("protobuf"), scorer, MODEL, MODELS[MODEL], "bench", engine="bench")
        factories = {"single": _factory(batch_size, False, seed), "named": _factory(batch_size, True, seed)}
        per = {k: {"generator": [], "worker": [], "collector": [], "total": []} for k in factories}
        for f in factories.values():           # untimed: ORT's first calls, allocator warm-up
            _block(f, op, max(50, calls // 10), 0, {k: [] for k in per["single"]})
        for r in range(rounds):
            for kind in (("single", "named") if r % 2 == 0 else ("named", "single")):
                _block(factories[kind], op, calls, r * calls, per[kind])
    finally:
        scorer.close()
    out: dict = {"batch_size": batch_size, "calls_per_round": calls, "rounds": rounds}
    for kind, parts in per.items():
        out[kind] = {f"{p}_us_median": statistics.median(v) * 1e6 for p, v in parts.items()}
        out[kind]["round_total_us_medians"] = [
            round(statistics.median(parts["total"][i * calls:(i + 1) * calls]) * 1e6, 2) for i in range(rounds)]
    s, n = out["single"]["total_us_median"], out["named"]["total_us_median"]
    out["overhead_pct"] = (n - s) / s * 100.0
    out["worker_overhead_pct"] = (out["named"]["worker_us_median"] - out["single"]["worker_us_median"]) \
        / out["single"]["worker_us_median"] * 100.0
    return out


def run(s: BenchSettings, log=print) -> dict:
    models_dir = default_models_dir()
    build_model(MODEL, models_dir, seed=s.seed)
    calls, rounds = (300, 4) if s.quick else (2000, 10)
    results = []
    for bsz in (1, 64):
        log(f"contract: FFNN bsz {bsz}, single vs named, {rounds} alternating rounds of {calls} batches")
        results.append(measure(bsz, calls, rounds, s.seed, models_dir))
    worst = max(r["overhead_pct"] for r in results)
    return {"model": MODEL, "backend": "onnxruntime (1 intra-op thread)", "codec": "protobuf",
            "points": results, "goal": {"overhead_pct_max": GOAL_PCT}, "goal_met": worst <= GOAL_PCT}
