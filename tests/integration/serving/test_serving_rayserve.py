"""Ray Serve (serving/rayserve) through the shared conformance suite, over HTTP (``ray-serve``,
as the paper) and over Ray's gRPC proxy speaking crayfish.v1.Scoring (``ray-serve-grpc``).

One real Ray + Serve start for the module (``.envs/ray``, built on first use by
``crayfish env build ray``); the ``served`` fixture is parametrized over the two client kinds.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from serving.clients import create_client
from serving.errors import BadInputError
from serving.rayserve import launcher
from tests.support.conformance_serving import Served, processes_in_session
from tests.support.procs import loopback_listeners

KINDS = ["ray-serve", "ray-serve-grpc"]
# exactly who answers, over both proxies: the deployment inside Ray Serve names it in every answer
# (envs/ray/requirements.txt pins ray[serve]==2.60.0)
SERVER_NAME = "ray-serve 2.60.0"


@pytest.fixture(scope="module")
def rayserve(models_dir):
    srv = launcher.start("ffnn", instances=2, models_dir=models_dir, extra_models=launcher.HUNG_MODELS)
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
