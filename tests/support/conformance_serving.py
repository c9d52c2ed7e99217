"""The conformance suite every external-serving path passes (Scoring, TF Serving protocol, Triton,
TorchServe, Ray Serve).

Use: in ``tests/integration/serving/test_serving_<server>.py`` define a module-scoped fixture ``served`` returning a
:class:`Served`, then ``from tests.support.conformance_serving import *  # noqa: F401,F403`` — pytest
collects these tests in that module, against that server. Everything is real: the server is
started by the project, the client is the one the workers use.

``Served.server_name`` is the exact identity the answers must carry (a constant of the test
module, e.g. ``"triton 2.51.0 (pytriton 0.7.0)"``), never a value read back from the launcher:
a runner that started the wrong server, or a server that stops saying who it is, fails here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from serving.clients.base import ExternalClient
from serving.errors import BadInputError, DeadlineExceededError, ModelNotFoundError
from serving.models import MODELS, model_paths, reference_forward

TOLERANCE = 1e-4


@dataclass
class Served:
    """What a server fixture hands the suite."""

    # make_client(model_name, timeout_s) -> a client of this server (the workers' client class)
    make_client: Callable[..., ExternalClient]
    # a model the server hosts that takes far longer than any test deadline (e.g. a sleep model)
    hung_model: str
    # exactly which server answers, as results (ClientResult.server, answered_by) report it
    server_name: str
    models: list[str] = field(default_factory=lambda: ["ffnn"])


def processes_in_session(sid: int) -> list:
    """Processes still in session ``sid`` (a server's launcher starts it in a session of its own):
    what a clean stop() must leave empty."""
    import os

    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "condition",
               poll_s: float = 0.02):
    """Poll ``condition()`` until it returns something truthy (returned); fail after ``timeout_s``
    with ``what``. A condition wait, not a timing claim: the timeout only bounds a broken run."""
    end = time.monotonic() + timeout_s
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < end, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(poll_s)


def _ffnn_inputs(n: int, batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((batch, *MODELS["ffnn"].input_shape), dtype=np.float32) for _ in range(n)]


def _reference(x: np.ndarray) -> np.ndarray:
    return reference_forward("ffnn", model_paths("ffnn").weights, x)


def test_health(served):
    client = served.make_client("ffnn", 5.0)
    try:
        assert client.health() is True
    finally:
        client.close()


def test_describe(served):
    client = served.make_client("ffnn", 5.0)
    try:
        d = client.describe()
    finally:
        client.close()
    assert len(d["inputs"]) == 1 and len(d["outputs"]) == 1
    assert [s for s in d["inputs"][0]["shape"] if s not in (-1, None)][-2:] == list(MODELS["ffnn"].input_shape)[-2:]
    assert [s for s in d["outputs"][0]["shape"] if s not in (-1, None)] == list(MODELS["ffnn"].output_shape)


@pytest.mark.parametrize("batch", [1, 32])
def test_unary_score_is_correct(served, batch):
    client = served.make_client("ffnn", 10.0)
    try:
        for x in _ffnn_inputs(3, batch):
            r = client.score(x)
            assert r.output.shape == (batch, 10)
            np.testing.assert_allclose(r.output, _reference(x), atol=TOLERANCE, rtol=0)
            assert r.server == served.server_name
    finally:
        client.close()


def test_streaming_score_is_correct_and_in_order(served):
    client = served.make_client("ffnn", 10.0)
    xs = _ffnn_inputs(40, 1, seed=1)
    try:
        results = client.score_stream(xs)
    finally:
        client.close()
    assert len(results) == len(xs)
    for x, r in zip(xs, results):
        np.testing.assert_allclose(r.output, _reference(x), atol=TOLERANCE, rtol=0)
    assert {r.server for r in results} == {served.server_name}


def test_pipelined_calls_are_correct(served):
    client = served.make_client("ffnn", 10.0)
    xs = _ffnn_inputs(20, 2, seed=2)
    try:
        futures = [client.score_async(x) for x in xs]
        outs = [f.result(timeout=30) for f in futures]
    finally:
        client.close()
    for x, r in zip(xs, outs):
        np.testing.assert_allclose(r.output, _reference(x), atol=TOLERANCE, rtol=0)
    assert {r.server for r in outs} == {served.server_name}


def test_bad_shape_is_invalid_argument(served):
    client = served.make_client("ffnn", 5.0)
    try:
        with pytest.raises(BadInputError):
            client.score(np.zeros((1, 1, 783), dtype=np.float32))
    finally:
        client.close()


def test_unknown_model_is_not_found(served):
    client = served.make_client("no-such-model", 5.0)
    try:
        with pytest.raises(ModelNotFoundError):
            client.score(np.zeros((1, 1, 784), dtype=np.float32))
    finally:
        client.close()


def test_deadline_on_a_hung_call(served):
    """The hung model answers (successfully) only long after the deadline: the call must fail with
    DEADLINE_EXCEEDED (the status, mapped to DeadlineExceededError), never wait for that answer."""
    client = served.make_client(served.hung_model, 0.3)
    try:
        with pytest.raises(DeadlineExceededError):
            client.score(np.zeros((1, *MODELS["ffnn"].input_shape), dtype=np.float32))
    finally:
        client.close()
    # the server still answers afterwards
    again = served.make_client("ffnn", 10.0)
    try:
        x = _ffnn_inputs(1)[0]
        np.testing.assert_allclose(again.score(x).output, _reference(x), atol=TOLERANCE, rtol=0)
    finally:
        again.close()
