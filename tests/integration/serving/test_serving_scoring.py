"""Our Scoring server (serving/scoring), started as its own process, through the workers' client:
the shared conformance suite, its listeners, and the worker's call modes (sps_workers/external.py)
judged by what the server saw: how many calls were inside it at once, and how many rows each
request carried."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from crayfish.codec import get_codec
from crayfish.tensor import from_tensor, to_tensor
from crayfish.v1 import batch_pb2
from serving.clients import create_client
from serving.models import MODELS, model_paths, reference_forward
from tests.support.conformance_serving import *  # noqa: F401,F403
from tests.support.conformance_serving import Served
from tests.support.procs import loopback_listeners

SERVER_NAME = "crayfish-scoring"


@pytest.fixture(scope="module")
def scoring(models_dir, tmp_path_factory):
    from serving.scoring.launcher import start

    server = start("ffnn", instances=2, models_dir=models_dir, log_dir=tmp_path_factory.mktemp("scoring"),
                   extra_models=[{"name": "ffnn-hung", "model": "ffnn", "backend": "sleep",
                                  "backend_options": {"delay_ms": 10000}, "warmup": False}])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(scoring):
    assert scoring.server == SERVER_NAME and scoring.kind == "scoring"
    return Served(make_client=lambda model, timeout_s: create_client("scoring", scoring.target, model,
                                                                      timeout_s=timeout_s, max_in_flight=8),
                  hung_model="ffnn-hung", server_name=SERVER_NAME)


def test_listens_on_loopback_only(scoring):
    found = loopback_listeners(scoring.service.proc.pid)
    assert int(scoring.target.rsplit(":", 1)[1]) in {a.port for a in found}, (scoring.target, found)


# -- call modes, as the server saw them ------------------------------------------------------------
@contextmanager
def in_process_server(**settings):
    """A real Scoring server (gRPC on 127.0.0.1) in this process, so the test can read its core's
    counters: server-side evidence of what the worker's calls looked like."""
    from serving.scoring import ScoringSettings
    from serving.scoring.server import build_server

    server, core, port = build_server(ScoringSettings(**settings))
    server.start()
    try:
        yield f"127.0.0.1:{port}", core
    finally:
        server.stop(0).wait()
        core.close(timeout=1.0)


def _inputs(rows: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((b, *MODELS["ffnn"].input_shape), dtype=np.float32) for b in rows]


def _prepared(op, xs: list[np.ndarray]) -> list:
    """DataBatches as a worker gets them from Kafka: encoded, then ``op.prepare``."""
    from sps_workers.scoring_op import Prepared

    codec = get_codec("protobuf")
    preps = []
    for i, x in enumerate(xs):
        value, headers = codec.encode_batch(batch_pb2.DataBatch(batch_id=f"b{i}", model="ffnn", input=to_tensor(x)))
        prep = op.prepare(value, headers, 0, "input", 0, i)
        assert isinstance(prep, Prepared), prep
        preps.append(prep)
    return preps


def _run_stage(target: str, mode: str, rows: list[int], **stage_options) -> dict:
    """Every batch through the worker's external-call stage in ``mode``; batch_id -> ScoredBatch."""
    from sps_workers.external import ExternalStage
    from sps_workers.scoring_op import ScoringOperator

    codec = get_codec("protobuf")
    op = ScoringOperator(codec, None, "ffnn", MODELS["ffnn"].input_shape, "w0", engine="kafka", backend="scoring")
    client = create_client("scoring", target, "ffnn", timeout_s=10.0,
                           max_in_flight=stage_options.get("max_in_flight", 1))
    done: dict = {}

    def emit(prep, res):
        assert res.value is not None, res.dead_letter
        done[prep.batch.batch_id] = codec.decode_scored(res.value, res.headers)

    try:
        stage = ExternalStage(op, client, emit, mode=mode, **stage_options)
        stage.submit(_prepared(op, _inputs(rows)))
        stage.drain(timeout_s=60)
    finally:
        client.close()
    assert len(done) == len(rows) and stage.failures == 0
    assert {s.facts.server for s in done.values()} == {SERVER_NAME}
    return done


@pytest.mark.parametrize("n", [2, 4])
def test_pipelined_calls_overlap_in_the_server(n):
    """A 50 ms sleep server with more instances than calls: with max_in_flight N the server had
    exactly N of the worker's calls inside it at once (never more)."""
    with in_process_server(backend="sleep", backend_options={"delay_ms": 50}, warmup=False, instances=8) as (t, core):
        _run_stage(t, "pipelined", [1] * 6 * n, max_in_flight=n)
        st = core.stats()["ffnn"]
    assert st["completed"] == 6 * n and st["in_flight"] == 0
    assert st["peak_in_flight"] == n, st
    assert st["peak_busy_instances"] == n, st


def test_blocking_calls_never_overlap():
    """The same server, blocking mode (even with a client allowed 8 calls): one call at a time."""
    with in_process_server(backend="sleep", backend_options={"delay_ms": 50}, warmup=False, instances=8) as (t, core):
        _run_stage(t, "blocking", [1] * 8, max_in_flight=8)
        st = core.stats()["ffnn"]
    assert st["completed"] == 8
    assert st["peak_in_flight"] == 1, st


def test_microbatch_calls_concatenate_worker_batches_and_split_answers(models_dir):
    """microbatch_max 4 over 12 DataBatches of 1/2/3 points: the server received 3 requests whose
    batch dimension is the sum of 4 worker batches each (7, 8 and 9 rows), and every batch got
    exactly its own rows of the answer (the real FFNN, against the numpy reference)."""
    rows = [1, 2, 3] * 4
    with in_process_server(instances=2, models_dir=models_dir) as (t, core):
        done = _run_stage(t, "microbatch", rows, max_in_flight=2, microbatch_max=4)
        st = core.stats()["ffnn"]
    assert st["request_rows"] == {7: 1, 8: 1, 9: 1}, st
    assert st["requests"] == 3 and st["rows"] == sum(rows), st
    weights = model_paths("ffnn", models_dir).weights
    for i, x in enumerate(_inputs(rows)):
        y = from_tensor(done[f"b{i}"].output)
        assert y.shape == (rows[i], 10)
        np.testing.assert_allclose(y, reference_forward("ffnn", weights, x), atol=1e-4, rtol=0)


def test_blocking_sends_each_worker_batch_alone(models_dir):
    """Control for the test above: the same batches in blocking mode reach the server as one
    request per DataBatch (the histogram is the batches' own sizes)."""
    rows = [1, 2, 3] * 4
    with in_process_server(instances=2, models_dir=models_dir) as (t, core):
        _run_stage(t, "blocking", rows)
        st = core.stats()["ffnn"]
    assert st["request_rows"] == {1: 4, 2: 4, 3: 4}, st


# -- the same through a real worker: experiment file -> runner -> Kafka worker -> server -------------
@pytest.mark.parametrize("call_mode", ["blocking", "pipelined", "microbatch"])
def test_worker_call_mode_as_the_server_saw_it(kafka_bootstrap, models_dir, tmp_path, call_mode):
    """An experiment run against a 50 ms sleep server (``serving.target``, more instances than
    calls), 200 one-point batches/s, more than the worker keeps up with: blocking (max_in_flight
    4 ignored) never had 2 calls in the server, pipelined (max_in_flight 4) had exactly 4,
    microbatch (microbatch_max 4, one call at a time) concatenated 4 DataBatches of the backlog
    into one request -- what the settings promise reaches the worker, no silent fallback to
    blocking calls. Every batch was scored, by this server."""
    from services.runner.experiment import Experiment
    from services.runner.experiments import run_experiment

    with in_process_server(backend="sleep", backend_options={"delay_ms": 50}, warmup=False, instances=8) as (t, core):
        exp = Experiment.model_validate({
            "name": f"modes-{call_mode}", "model": "ffnn", "engine": "kafka", "batch_size": 1,
            "kafka": {"bootstrap": kafka_bootstrap},
            "serving": {"kind": "external", "server": "scoring", "target": t, "backend": "sleep",
                        "delay_ms": 50, "call_mode": call_mode, "microbatch_max": 4,
                        "max_in_flight": 1 if call_mode == "microbatch" else 4},
            "workload": {"type": "constant", "rate": 200, "count": 120},
            "validity": {"min_duration_s": 0.5, "min_count": 20}})
        summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
        st = core.stats()["ffnn"]
    point = summary["points"][0]
    assert point["accounting"]["scored"] == 120 and point["accounting"]["missing"] == 0, point["accounting"]
    assert point["answered_by"] == [SERVER_NAME]
    assert st["rows"] == 120 and st["in_flight"] == 0, st
    if call_mode == "blocking":
        assert st["peak_in_flight"] == 1 and st["request_rows"] == {1: 120}, st
    elif call_mode == "pipelined":
        assert st["peak_in_flight"] == 4 and st["request_rows"] == {1: 120}, st
    else:
        assert max(st["request_rows"]) == 4 and st["requests"] < 120, st
        assert st["peak_in_flight"] == 1, st
