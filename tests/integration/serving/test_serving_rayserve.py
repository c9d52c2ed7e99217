"""Ray Serve (serving/rayserve) through the shared conformance suite, over HTTP (``ray-serve``,
as the paper) and over Ray's gRPC proxy speaking crayfish.v1.Scoring (``ray-serve-grpc``).

One real Ray + Serve start for the module (``.envs/ray``, built on first use by
``crayfish env build ray``); the ``served`` fixture is parametrized over the two client kinds.
Besides ``ffnn`` (2 replicas) and ``ffnn-hung`` it hosts ``masked``: a model file of two inputs
and two outputs of different dtypes (named tensors), from a models dir of the module's own.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from serving.clients import create_client
from serving.errors import BadInputError
from serving.models import model_paths, reference_forward
from serving.rayserve import launcher
from tests.support.conformance_serving import Served, processes_in_session
from tests.support.model_files import assert_masked, assert_named_refusals, masked_feeds, masked_models_dir
from tests.support.procs import loopback_listeners

KINDS = ["ray-serve", "ray-serve-grpc"]
# exactly who answers, over both proxies: the deployment inside Ray Serve names it in every answer
# (envs/ray/requirements.txt pins ray[serve]==2.60.0)
SERVER_NAME = "ray-serve 2.60.0"


# features float32 [b, 6] + mask int64 [b, 6] -> scores float32 [b, 3] + label int64 [b]
NAMED_MODELS = {"masked": {"model": "masked", "instances": 1}}


@pytest.fixture(scope="module")
def ray_models(tmp_path_factory):
    """A models dir of the module's own: the FFNN (same seed as the shared one) and the imported
    two-input model file (not written into the shared .cache/models)."""
    return masked_models_dir(tmp_path_factory.mktemp("ray-models"))


@pytest.fixture(scope="module")
def rayserve(ray_models):
    srv = launcher.start("ffnn", instances=2, models_dir=ray_models,
                         extra_models={**launcher.HUNG_MODELS, **NAMED_MODELS})
    pid = srv.service.proc.pid
    try:
        tree = psutil.Process(pid).children(recursive=True)
        assert len(tree) >= 4  # gcs_server, raylet, controller, proxy, replicas ...
        yield srv
    finally:
        srv.stop()
    # stop() leaves nothing of the Ray tree (or of the driver's session) behind
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after stop(): {alive}"
    assert not processes_in_session(pid), f"left in the driver's session after stop(): {processes_in_session(pid)}"


@pytest.fixture(scope="module", params=KINDS)
def served(request, rayserve):
    kind = request.param
    target = rayserve.targets[kind]
    return Served(
        make_client=lambda model, timeout_s: create_client(kind, target, model, timeout_s=timeout_s,
                                                           max_in_flight=4),
        hung_model="ffnn-hung",
        server_name=SERVER_NAME,
    )


from tests.support.conformance_serving import *  # noqa: E402,F401,F403


# -- Ray Serve specifics ----------------------------------------------------------------------
def test_both_endpoints_and_server_name(rayserve):
    assert rayserve.kind == "ray-serve" and rayserve.target == rayserve.targets["ray-serve"]
    assert set(rayserve.targets) == set(KINDS)
    assert rayserve.server == SERVER_NAME
    for target in rayserve.targets.values():
        assert target.startswith("127.0.0.1:")


def test_every_listener_is_loopback(rayserve):
    """Ray starts many listeners (GCS, raylet's node and object managers, the dashboard head and
    agent, the runtime-env agent, Serve's controller, its HTTP and gRPC proxy, every replica's
    gRPC servers, ...): every one in the server's process tree is on loopback, the two proxy
    endpoints among them, and each of Ray's core processes does listen (so none escaped the check
    by listening from outside the tree)."""
    pid = rayserve.service.proc.pid
    found = loopback_listeners(pid, at_least=8)
    ports = {a.port for a in found}
    assert {int(t.rsplit(":", 1)[1]) for t in rayserve.targets.values()} <= ports, (rayserve.targets, found)
    by_process: dict[str, int] = {}
    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            n = sum(c.status == psutil.CONN_LISTEN for c in p.net_connections(kind="inet"))
            name = " ".join(p.cmdline()[:1]) or p.name()
        except psutil.Error:
            continue
        for key in ("gcs_server", "raylet", "ServeController", "ProxyActor", "ServeReplica:ffnn:",
                    "DashboardAgent"):
            if key in name and n:
                by_process[key] = by_process.get(key, 0) + n
    assert set(by_process) == {"gcs_server", "raylet", "ServeController", "ProxyActor", "ServeReplica:ffnn:",
                               "DashboardAgent"}, by_process


@pytest.mark.parametrize("kind", KINDS)
def test_results_carry_server_timings(rayserve, kind):
    client = create_client(kind, rayserve.targets[kind], "ffnn", timeout_s=10.0)
    try:
        r = client.score(np.zeros((4, 1, 784), dtype=np.float32))
    finally:
        client.close()
    assert r.output.shape == (4, 10)
    assert r.server == SERVER_NAME
    assert r.server_inference_ns > 0


def test_http_bad_request_message_names_the_problem(rayserve):
    client = create_client("ray-serve", rayserve.target, "ffnn", timeout_s=5.0)
    try:
        with pytest.raises(BadInputError, match=r"783"):
            client.score(np.zeros((1, 1, 783), dtype=np.float32))
    finally:
        client.close()


def test_grpc_stream_failure_carries_its_status(rayserve):
    """Serve forwards a status set on a stream's context only when the generator raises: the
    deployment does, so a bad record mid-stream is INVALID_ARGUMENT (not a silently short stream)."""
    ok = np.zeros((1, 1, 784), dtype=np.float32)
    client = create_client("ray-serve-grpc", rayserve.targets["ray-serve-grpc"], "ffnn", timeout_s=10.0)
    try:
        with pytest.raises(BadInputError, match=r"request_id=\d+: .*783"):
            client.score_stream([ok, np.zeros((1, 1, 783), dtype=np.float32), ok])
    finally:
        client.close()


# -- named tensors (serving.models.spec), over both protocols -----------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_two_inputs_and_two_outputs_of_their_own_dtypes(rayserve, ray_models, kind):
    """Every input by name in its dtype (float32 + int64), every output back by name (float32 +
    int64 [b]); unary, pipelined and streamed; the metadata lists them all."""
    client = create_client(kind, rayserve.targets[kind], "masked", timeout_s=10.0, max_in_flight=4)
    try:
        d = client.describe()
        assert [(t["name"], t["dtype"], t["shape"]) for t in d["inputs"]] == [
            ("features", "float32", [-1, 6]), ("mask", "int64", [-1, 6])]
        assert [(t["name"], t["dtype"], t["shape"]) for t in d["outputs"]] == [
            ("scores", "float32", [-1, 3]), ("label", "int64", [-1])]
        for batch in (1, 5):
            x = masked_feeds(batch, seed=batch)
            r = client.score(x)
            assert r.server == SERVER_NAME and r.server_inference_ns > 0
            assert_masked(r.output, x, ray_models)
        xs = [masked_feeds(1 + i % 3, seed=10 + i) for i in range(6)]
        for x, f in zip(xs, [client.score_async(x) for x in xs]):
            assert_masked(f.result(timeout=30).output, x, ray_models)
        for x, r in zip(xs, client.score_stream(xs)):
            assert_masked(r.output, x, ray_models)
    finally:
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_named_inputs_that_do_not_fit_are_bad_input(rayserve, ray_models, kind):
    client = create_client(kind, rayserve.targets[kind], "masked", timeout_s=10.0)
    x = masked_feeds(2)
    try:
        with pytest.raises(BadInputError, match="named inputs"):       # one unnamed tensor
            client.score(x["features"])
        assert_named_refusals(client, ray_models, missing="missing mask")
    finally:
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_one_input_model_sent_by_name_answers_by_name(rayserve, kind):
    x = np.random.default_rng(3).random((3, 1, 784), dtype=np.float32)
    ref = reference_forward("ffnn", model_paths("ffnn").weights, x)
    client = create_client(kind, rayserve.targets[kind], "ffnn", timeout_s=10.0)
    try:
        r = client.score({"input_1": x})
        assert set(r.output) == {"output"}
        np.testing.assert_allclose(r.output["output"], ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(client.score(x).output, ref, atol=1e-4, rtol=0)   # unnamed still
    finally:
        client.close()
