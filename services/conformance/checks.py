"""The checks: each judges what an adapter did and passes with a short detail, or raises
:class:`CheckFailed` with a reason a reader acts on.

The main round (:func:`observe`) sends one mix of good and bad batches and reads everything that
comes back; most checks judge that one observation. The rest need a start of their own (mp > 1,
external serving).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crayfish.codec import CodecError, get_codec
from crayfish.tensor import from_tensor
from crayfish.v1 import batch_pb2
from observability.hops import read_spans
from services.conformance.traffic import (
    GARBAGE,
    Sent,
    end_offsets,
    read_from,
    send_round,
    send_zeros,
)
from serving.models import model_paths, reference_forward


class CheckFailed(AssertionError):
    """A check's verdict: what the adapter did wrong, in one or two lines."""


@dataclass
class Observation:
    """What came back from the main round."""

    sent: Sent
    scored: dict[str, list] = field(default_factory=dict)        # batch id -> its ScoredBatch copies
    headers: dict[str, dict] = field(default_factory=dict)       # batch id -> headers of its first copy
    dead: list = field(default_factory=list)                     # DeadLetter records
    undecodable: list[str] = field(default_factory=list)         # why output records could not be read
    alive_after: bool | None = None                              # the process still ran (None: external)
    exit_code: int | None = None                                 # after SIGTERM (None: external)
    spans: list[dict] = field(default_factory=list)


def observe(bootstrap: str, started, timeout_s: float) -> Observation:
    topics = started.topics
    start = end_offsets(bootstrap, [topics.output, topics.dead_letter])
    sent = send_round(bootstrap, topics.input, started.run_id)
    expected = len(sent.good) + len(sent.bad) + 1
    codec = get_codec("protobuf")
    obs = Observation(sent)

    def until(records) -> bool:
        return len(records) >= expected

    for m in read_from(bootstrap, start, until, timeout_s):
        if m.topic() == topics.output:
            try:
                s = codec.decode_scored(m.value(), m.headers())
            except CodecError as exc:
                obs.undecodable.append(str(exc)[:120])
                continue
            if s.batch_id not in obs.scored:
                obs.headers[s.batch_id] = dict(m.headers() or [])
            obs.scored.setdefault(s.batch_id, []).append(s)
        else:
            d = batch_pb2.DeadLetter()
            try:
                d.ParseFromString(m.value())
            except Exception:  # noqa: BLE001 - any parse failure is the adapter's fault, reported
                obs.undecodable.append("a dead-letter record is not a crayfish.v1.DeadLetter")
                continue
            obs.dead.append(d)
    if started.service is not None:
        obs.alive_after = started.service.alive()
    return obs


def _names(ids) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:4]) + (f" (+{len(ids) - 4} more)" if len(ids) > 4 else "")


# ---- checks of the main round ---------------------------------------------------------------

def accounting(obs: Observation, **_) -> str:
    good = set(obs.sent.good)
    missing = good - set(obs.scored)
    unknown = set(obs.scored) - good - set(obs.sent.bad)
    if obs.undecodable:
        raise CheckFailed(f"{len(obs.undecodable)} output records unreadable: {obs.undecodable[0]}")
    if missing:
        raise CheckFailed(f"{len(missing)}/{len(good)} good batches never scored: {_names(missing)}")
    if unknown:
        raise CheckFailed(f"outputs for batches never sent: {_names(unknown)}")
    copies = sum(len(v) - 1 for v in obs.scored.values())
    return f"{len(good)}/{len(good)} good batches scored, {copies} duplicates"


def dead_letters(obs: Observation, **_) -> str:
    wanted = {**obs.sent.bad, "(not protobuf)": "decode_error"}
    got: dict[str, str] = {}
    for d in obs.dead:
        key = d.batch_id or ("(not protobuf)" if d.payload == GARBAGE else "(no batch id)")
        got[key] = d.reason
    wrong = [f"{k.rsplit('-', 1)[-1]}: {got.get(k, 'nothing')} (expected {v})"
             for k, v in wanted.items() if got.get(k) != v]
    if wrong:
        raise CheckFailed("bad records not dead-lettered with their reason: " + "; ".join(wrong))
    scored_bad = set(obs.scored) & set(obs.sent.bad)
    if scored_bad:
        raise CheckFailed(f"bad batches scored instead of dead-lettered: {_names(scored_bad)}")
    return f"{len(wanted)} bad records dead-lettered with reasons {sorted(set(wanted.values()))}"


def keeps_scoring(obs: Observation, **_) -> str:
    late = obs.sent.late_good - set(obs.scored)
    if late:
        raise CheckFailed(f"good batches sent after the bad records were not scored: {_names(late)}")
    if obs.alive_after is False:
        raise CheckFailed("the adapter's process ended after the bad records")
    return f"{len(obs.sent.late_good)} batches after the bad records scored; still running"


def predictions(obs: Observation, models_dir: Path, **_) -> str:
    weights = model_paths("ffnn", models_dir).weights
    off = []
    for bid, copies in obs.scored.items():
        if bid not in obs.sent.good:
            continue
        want = reference_forward("ffnn", weights, obs.sent.good[bid])
        got = from_tensor(copies[0].output) if copies[0].HasField("output") else None
        if got is None or got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            off.append(bid)
    if off:
        raise CheckFailed(f"{len(off)} predictions differ from the numpy reference: {_names(off)}")
    return f"{len(obs.scored)} outputs equal the reference (rtol 1e-4, atol 1e-5)"


def stamps(obs: Observation, expected_engine: str | None, **_) -> str:
    bad = []
    for bid, copies in obs.scored.items():
        s = copies[0]
        f = s.facts
        if not f.engine or (expected_engine and f.engine != expected_engine):
            bad.append(f"{bid}: facts.engine={f.engine!r}")
        elif not (s.input_append_ms > 0 and f.worker_send_ns >= f.worker_receive_ns > 0):
            bad.append(f"{bid}: input_append_ms / worker_receive_ns / worker_send_ns missing or out of order")
        elif f.inference_ns <= 0:
            bad.append(f"{bid}: inference_ns not set")
    if bad:
        raise CheckFailed(f"{len(bad)} outputs without the timing stamps: {bad[0]}")
    return "ScoringFacts stamps and input_append_ms set on every output"


def trace_context(obs: Observation, **_) -> str:
    tp = obs.headers.get(obs.sent.traced_id, {}).get("traceparent")
    if tp is None:
        raise CheckFailed("the traced batch's output has no traceparent header: trace context dropped")
    try:
        _, trace, span, flags = tp.decode().split("-")
    except ValueError:
        raise CheckFailed(f"malformed traceparent on the output: {tp!r}") from None
    if trace != obs.sent.trace_id or span == obs.sent.parent_span or not int(flags, 16) & 1:
        raise CheckFailed(f"traceparent {tp.decode()} is not a new sampled span of trace {obs.sent.trace_id}")
    leaked = [bid for bid, h in obs.headers.items() if bid != obs.sent.traced_id and "traceparent" in h]
    if leaked:
        raise CheckFailed(f"untraced batches came out traced: {_names(leaked)}")
    return "carried on in the same trace, untraced batches stay untraced"


def clean_stop(obs: Observation, **_) -> str:
    if obs.exit_code != 0:
        raise CheckFailed(f"after SIGTERM the process exited with {obs.exit_code} (expected 0: drain, commit, exit)")
    return "SIGTERM -> exit 0"


def hop_spans(obs: Observation, **_) -> str:
    mine = [s for s in obs.spans if s["trace_id"] == obs.sent.trace_id]
    names = {s["name"] for s in mine}
    missing = {"crayfish.decode", "crayfish.score", "crayfish.encode"} - names
    if missing:
        raise CheckFailed(f"no hop spans {sorted(missing)} for the traced batch in $CRAYFISH_SPANS_DIR")
    process = next((s for s in mine if s["name"].startswith("process ")), None)
    if process is None or process["parent_id"] != obs.sent.parent_span:
        raise CheckFailed("the consumer span 'process <topic>' is not a child of the incoming context")
    return f"{len(mine)} spans under the incoming context"


def read_spans_after_stop(obs: Observation, spans_dir: Path) -> None:
    obs.spans = read_spans(spans_dir) if spans_dir.exists() else []


# ---- checks with a start of their own ---------------------------------------------------------

def parallel_instances(adapter, bootstrap: str, timeout_s: float, **_) -> str:
    started = adapter.start(parallelism=2, partitions=2)
    start = end_offsets(bootstrap, [started.topics.output])
    ids = send_zeros(bootstrap, started.topics.input, started.run_id, 40)
    codec = get_codec("protobuf")
    records = read_from(bootstrap, start, lambda got: len(got) >= len(ids), timeout_s)
    scored = [codec.decode_scored(m.value(), m.headers()) for m in records]
    missing = ids - {s.batch_id for s in scored}
    if missing:
        raise CheckFailed(f"with parallelism 2, {len(missing)}/{len(ids)} batches never scored")
    workers = {s.facts.worker_id for s in scored}
    if len(workers) < 2:
        raise CheckFailed(f"parallelism 2 but every batch scored by {sorted(workers)}")
    return f"{len(ids)} batches scored by {len(workers)} instances"


def scoring_service(adapter, bootstrap: str, models_dir: Path, workdir: Path, timeout_s: float, **_) -> str:
    from serving.scoring.launcher import (
        start as start_scoring_server,  # a server only for this check
    )
    from sps_workers.settings import ExternalSettings

    server = start_scoring_server("ffnn", instances=1, models_dir=models_dir, log_dir=workdir / "server")
    try:
        started = adapter.start(external=ExternalSettings(client="scoring", target=server.target, timeout_s=5.0))
        start = end_offsets(bootstrap, [started.topics.output])
        ids = send_zeros(bootstrap, started.topics.input, started.run_id, 10)
        records = read_from(bootstrap, start, lambda got: len(got) >= len(ids), timeout_s)
    finally:
        server.stop()
    scored = [get_codec("protobuf").decode_scored(m.value(), m.headers()) for m in records]
    missing = ids - {s.batch_id for s in scored}
    if missing:
        raise CheckFailed(f"through the Scoring server, {len(missing)}/{len(ids)} batches never scored")
    wrong = [s.batch_id for s in scored if s.facts.server != "crayfish-scoring" or s.facts.server_inference_ns <= 0]
    if wrong:
        raise CheckFailed(f"outputs without the server's facts (facts.server, server_inference_ns): {_names(wrong)}")
    return f"{len(ids)} batches scored by the Scoring server"
