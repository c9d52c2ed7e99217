"""Triton Inference Server (serving/triton, through PyTriton) with the ``triton`` client (KServe v2
gRPC via tritonclient) through the shared conformance suite, plus Triton-specific checks.

One real Triton start for the module (``.envs/triton``, built on first use by
``crayfish env build triton``), with its gRPC, HTTP and metrics endpoints on: ``ffnn`` with 2
instances, ``ffnn-hung`` (5 s sleep), a 2-instance 300 ms sleep model (instances really run
concurrently), a dynamically batched FFNN, and ``masked``: a model file of two inputs and two
outputs of different dtypes (named tensors), from a models dir of the module's own.
"""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import numpy as np
import psutil
import pytest

from serving.clients import create_client
from serving.errors import BadInputError, ModelNotFoundError
from serving.models import MODELS, model_paths, reference_forward
from serving.triton import launcher
from tests.support.conformance_serving import Served, processes_in_session, wait_until
from tests.support.model_files import assert_masked, assert_named_refusals, masked_feeds, masked_models_dir
from tests.support.procs import loopback_listeners

# exactly who answers: Triton 2.51.0, as bundled by nvidia-pytriton 0.7.0 (envs/triton/requirements.txt)
SERVER_NAME = "triton 2.51.0 (pytriton 0.7.0)"

EXTRA_MODELS = {
    **launcher.HUNG_MODELS,
    "ffnn-sleep": {"model": "ffnn", "backend": "sleep", "options": {"delay_ms": 300}, "instances": 2},
    "ffnn-batched": {"model": "ffnn", "instances": 1,
                     "batching": {"max_batch_size": 64, "max_queue_delay_us": 2000}},
    # features float32 [b, 6] + mask int64 [b, 6] -> scores float32 [b, 3] + label int64 [b]
    "masked": {"model": "masked", "instances": 1},
}


@pytest.fixture(scope="module")
def triton_models(tmp_path_factory):
    """A models dir of the module's own: the FFNN (same seed as the shared one) and the imported
    two-input model file (not written into the shared .cache/models)."""
    return masked_models_dir(tmp_path_factory.mktemp("triton-models"))


@pytest.fixture(scope="module")
def triton(triton_models):
    srv = launcher.start("ffnn", instances=2, models_dir=triton_models, extra_models=EXTRA_MODELS,
                         http=True, metrics=True)
    pid = srv.service.proc.pid
    workdir = srv.info["workdir"]
    try:
        tree = psutil.Process(pid).children(recursive=True)
        names = {p.name() for p in tree}
        assert "tritonserver" in names, names
        yield srv
    finally:
        srv.stop()
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after stop(): {alive}"
    assert not processes_in_session(pid), f"left in the server's session after stop(): {processes_in_session(pid)}"
    assert not workdir.exists(), f"{workdir} left after stop()"
    assert not list(Path("/dev/shm").glob(f"pytrtion{pid}-*")), "shared memory left after stop()"
    copies = [c for c in Path("/tmp").glob("folder*/config.pbtxt") if str(workdir) in c.read_text()]
    assert not copies, f"Triton's model copies left after stop(): {copies}"


@pytest.fixture(scope="module")
def served(triton):
    return Served(
        make_client=lambda model, timeout_s: create_client("triton", triton.target, model,
                                                           timeout_s=timeout_s, max_in_flight=4),
        hung_model="ffnn-hung",
        server_name=SERVER_NAME,
    )


from tests.support.conformance_serving import *  # noqa: E402,F401,F403


def _x(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *MODELS["ffnn"].input_shape), dtype=np.float32)


def _ref(x: np.ndarray) -> np.ndarray:
    return reference_forward("ffnn", model_paths("ffnn").weights, x)


def _settled(triton, model: str, key: str, at_least: int) -> dict | None:
    """The server's stats of ``model`` once ``key`` reached ``at_least`` and nothing runs (the
    server rewrites them every 0.5 s), else None."""
    st = triton.stats().get(model) or {}
    return st if st.get(key, 0) >= at_least and st.get("running") == 0 else None


def test_server_identifies_itself(triton):
    assert triton.kind == "triton"
    assert triton.server == SERVER_NAME
    client = create_client("triton", triton.target, "ffnn")
    try:
        assert client.score(_x()).server == SERVER_NAME
        d = client.describe()
        assert d["inputs"][0] == {"name": "input_1", "dtype": "float32", "shape": [-1, 1, 784]}
        assert d["outputs"][0] == {"name": "output", "dtype": "float32", "shape": [-1, 10]}
    finally:
        client.close()


def test_listens_on_loopback_only(triton):
    """Every listener of the server's process tree (tritonserver's gRPC, HTTP and metrics
    endpoints, and anything PyTriton opens) is on loopback; the three endpoints are among them."""
    found = loopback_listeners(triton.service.proc.pid, at_least=3)
    ports = {a.port for a in found}
    endpoints = {triton.info[k] for k in ("grpc_port", "http_port", "metrics_port")}
    assert None not in endpoints and endpoints <= ports, (triton.info, found)


def test_health_of_unknown_model_is_false(triton):
    client = create_client("triton", triton.target, "no-such-model")
    try:
        assert client.health() is False
        with pytest.raises(ModelNotFoundError):
            client.describe()
    finally:
        client.close()


def test_non_float32_input_is_bad_input(triton):
    client = create_client("triton", triton.target, "ffnn")
    try:
        with pytest.raises(BadInputError):
            client.score(np.zeros((1, 1, 784), dtype=np.float64))
    finally:
        client.close()


def test_stream_errors_are_mapped(triton):
    client = create_client("triton", triton.target, "ffnn", timeout_s=5.0)
    try:
        with pytest.raises(BadInputError):
            client.score_stream([_x(), np.zeros((1, 1, 3), dtype=np.float32)])
        # the client (and a new stream) still works afterwards
        xs = [_x(seed=i) for i in range(3)]
        for x, r in zip(xs, client.score_stream(xs)):
            np.testing.assert_allclose(r.output, _ref(x), atol=1e-4, rtol=0)
    finally:
        client.close()
    missing = create_client("triton", triton.target, "no-such-model")
    try:
        with pytest.raises(ModelNotFoundError):
            missing.score_stream([_x()])
    finally:
        missing.close()


def test_instances_run_concurrently(triton):
    """2 instances of a 300 ms model, 4 concurrent calls: the model's instances (server side) ran
    exactly 2 executions at once -- both instances, never more."""
    client = create_client("triton", triton.target, "ffnn-sleep", timeout_s=10.0)
    try:
        futures = [client.score_async(_x(seed=i)) for i in range(4)]
        for f in futures:
            assert f.result(timeout=10).server == SERVER_NAME
    finally:
        client.close()
    st = wait_until(lambda: _settled(triton, "ffnn-sleep", "executions", 4), 30, "the server's stats of ffnn-sleep")
    assert st["executions"] == 4 and st["running"] == 0, st
    assert st["peak_concurrent_executions"] == 2, st


def test_dynamic_batching_is_correct(triton):
    client = create_client("triton", triton.target, "ffnn-batched", timeout_s=10.0)
    xs = [_x(batch=1 + i % 3, seed=i) for i in range(24)]
    try:
        with cf.ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(client.score, xs))
        with pytest.raises(BadInputError):        # more rows than the batcher's max_batch_size
            client.score(_x(batch=65))
    finally:
        client.close()
    for x, r in zip(xs, outs):
        np.testing.assert_allclose(r.output, _ref(x), atol=1e-4, rtol=0)
    # Triton's batcher really merged requests: an execution had more rows than any request (3)
    st = wait_until(lambda: _settled(triton, "ffnn-batched", "rows", sum(len(x) for x in xs)), 30,
                    "the server's stats of ffnn-batched")
    assert st["rows"] == sum(len(x) for x in xs) and st["executions"] < len(xs), st
    assert st["max_batch_rows"] > 3, st


def test_launcher_rejects_unknown_options(models_dir):
    with pytest.raises(ValueError, match="unknown option"):
        launcher.start("ffnn", models_dir=models_dir, no_such_option=1)
    with pytest.raises(ValueError, match="unknown key"):
        launcher.start("ffnn", models_dir=models_dir, extra_models={"x": {"delay": 1}})


# -- named tensors (serving.models.spec) --------------------------------------------------------

def test_two_inputs_and_two_outputs_of_their_own_dtypes(triton, triton_models):
    """One InferInput per name with its datatype (FP32 + INT64), every output back by name (the
    [b] label: dims [1] reshaped to [] on the server, [b] again here); unary, pipelined, streamed."""
    client = create_client("triton", triton.target, "masked", timeout_s=10.0)
    try:
        d = client.describe()
        assert [(t["name"], t["dtype"]) for t in d["inputs"]] == [("features", "float32"), ("mask", "int64")]
        assert [(t["name"], t["dtype"]) for t in d["outputs"]] == [("scores", "float32"), ("label", "int64")]
        for batch in (1, 5):
            x = masked_feeds(batch, seed=batch)
            r = client.score(x)
            assert r.server == SERVER_NAME
            assert_masked(r.output, x, triton_models)
        xs = [masked_feeds(1 + i % 3, seed=10 + i) for i in range(6)]
        for x, f in zip(xs, [client.score_async(x) for x in xs]):
            assert_masked(f.result(timeout=30).output, x, triton_models)
        for x, r in zip(xs, client.score_stream(xs)):
            assert_masked(r.output, x, triton_models)
    finally:
        client.close()


def test_named_inputs_that_do_not_fit_are_bad_input(triton, triton_models):
    client = create_client("triton", triton.target, "masked", timeout_s=5.0)
    x = masked_feeds(2)
    try:
        with pytest.raises(BadInputError, match="named inputs"):       # one unnamed tensor
            client.score(x["features"])
        assert_named_refusals(client, triton_models, missing=None, shape=None)
    finally:
        client.close()


def test_a_one_input_model_sent_by_name_answers_by_name(triton):
    client = create_client("triton", triton.target, "ffnn", timeout_s=10.0)
    try:
        x = _x(batch=3, seed=4)
        r = client.score({"input_1": x})
        assert set(r.output) == {"output"}
        np.testing.assert_allclose(r.output["output"], _ref(x), atol=1e-4, rtol=0)
        np.testing.assert_allclose(client.score(x).output, _ref(x), atol=1e-4, rtol=0)  # unnamed still
    finally:
        client.close()
