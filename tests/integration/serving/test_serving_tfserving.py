"""The TF Serving protocol path (serving/tfserving) against the shared conformance suite.

The server is real: :func:`serving.tfserving.launcher.start` runs our Scoring server with TF
Serving's ``PredictionService`` in the ``tensorflow`` environment (FFNN on the ``savedmodel``
backend, i.e. TensorFlow running the exported SavedModel), plus ``ffnn-hung``, a second core on
the ``sleep`` backend (5 s per call) for the deadline test.

Named tensors (several inputs / outputs of their own dtypes) are checked at the protocol level
with a second real server of the module: the same servicer hosting ``masked``, a model file of two
inputs and two outputs, on the ``onnxruntime`` backend (the SavedModel export is for the built-in
models; experiments keep the TF Serving path to those).

The client is real too, but it needs the TF Serving stubs, i.e. the ``tensorflow`` environment,
while these tests run in the core env. So ``make_client`` returns a
:class:`serving.tfserving.remote_client.RemoteClient`: a thin proxy whose calls run the real
``tf-serving`` client (:mod:`serving.tfserving.client`) inside one long-lived subprocess of the
``tensorflow`` environment (stdin/stdout pipes; results and serving.errors exceptions come back
as raised there). Timeouts, deadlines and errors are therefore the real client's.
"""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import BadInputError, ModelNotFoundError
from serving.models import model_paths, reference_forward
from serving.tfserving import launcher
from serving.tfserving.remote_client import ClientHost
from tests.support.conformance_serving import Served
from tests.support.conformance_serving import *  # noqa: F401,F403
from tests.support.model_files import assert_masked, assert_named_refusals, masked_feeds, masked_models_dir
from tests.support.procs import loopback_listeners

# exactly who answers: our Scoring server speaking TF Serving's protocol (real TF Serving names
# nobody, so its answers read "tf-serving")
SERVER_NAME = "crayfish-scoring (tf-serving protocol)"


@pytest.fixture(scope="module")
def tfserving(models_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tfserving")
    running = launcher.start("ffnn", instances=1, models_dir=models_dir, log_dir=log_dir,
                             extra_models=launcher.HUNG_MODELS)
    host = None
    try:
        host = ClientHost("tensorflow", log_path=log_dir / "client-host.log")
        yield running, host
    finally:
        if host is not None:
            host.close()
        running.stop()


@pytest.fixture(scope="module")
def served(tfserving):
    running, host = tfserving
    assert running.server == SERVER_NAME and running.kind == "tf-serving"
    return Served(
        make_client=lambda model, timeout_s: host.client(running.kind, running.target, model, timeout_s=timeout_s),
        hung_model="ffnn-hung",
        server_name=SERVER_NAME,
    )


def test_listens_on_loopback_only(tfserving):
    running, _ = tfserving
    found = loopback_listeners(running.service.proc.pid)
    assert int(running.target.rsplit(":", 1)[1]) in {a.port for a in found}, (running.target, found)


def test_answer_says_which_server_and_timings(served):
    client = served.make_client("ffnn", 10.0)
    try:
        r = client.score(np.zeros((2, 1, 784), dtype=np.float32))
        d = client.describe()
    finally:
        client.close()
    assert r.server == SERVER_NAME
    assert r.server_inference_ns > 0 and r.server_queue_ns >= 0
    assert d["signature"] == "serving_default" and d["method"] == "tensorflow/serving/predict"
    assert d["inputs"] == [{"name": "input_1", "dtype": "float32", "shape": [-1, 1, 784]}]
    assert d["version"] == 1


def test_tf_serving_model_spec_rules(tfserving):
    running, host = tfserving
    x = np.zeros((1, 1, 784), dtype=np.float32)
    cases = [({"model_version": 2}, ModelNotFoundError),        # only version 1 is served
             ({"signature_name": "nope"}, BadInputError),         # only serving_default
             ({"input_key": "images"}, BadInputError)]            # the signature's key is input_1
    for options, error in cases:
        client = host.client(running.kind, running.target, "ffnn", timeout_s=5.0, **options)
        try:
            with pytest.raises(error):
                client.score(x)
        finally:
            client.close()
    client = host.client(running.kind, running.target, "ffnn", timeout_s=5.0, model_version=1)
    try:
        assert client.score(x).output.shape == (1, 10)
        with pytest.raises(BadInputError, match="DT_FLOAT"):   # refused by the client itself
            client.score(x.astype(np.float64))
    finally:
        client.close()


def test_health_of_an_unknown_model_is_false(tfserving):
    running, host = tfserving
    client = host.client(running.kind, running.target, "no-such-model", timeout_s=5.0)
    try:
        assert client.health() is False
    finally:
        client.close()


# -- named tensors (serving.models.spec) --------------------------------------------------------

@pytest.fixture(scope="module")
def named_server(tfserving, tmp_path_factory):
    """The servicer hosting ``masked`` (features float32 [b, 6] + mask int64 [b, 6] -> scores
    float32 [b, 3] + label int64 [b]) on onnxruntime, from a models dir of the module's own."""
    _, host = tfserving
    d = masked_models_dir(tmp_path_factory.mktemp("tfserving-models"))
    running = launcher.start("masked", instances=1, models_dir=d, log_dir=d / "logs", backend="onnxruntime")
    try:
        yield running, host, d
    finally:
        running.stop()


def test_two_inputs_and_two_outputs_of_their_own_dtypes(named_server):
    """PredictRequest.inputs holds every input by name with its DataType (DT_FLOAT + DT_INT64);
    the answer every output (DT_FLOAT + DT_INT64 [b]); the signature lists them all."""
    running, host, models_dir = named_server
    assert running.server == SERVER_NAME
    client = host.client(running.kind, running.target, "masked", timeout_s=10.0)
    try:
        d = client.describe()
        assert d["inputs"] == [{"name": "features", "dtype": "float32", "shape": [-1, 6]},
                               {"name": "mask", "dtype": "int64", "shape": [-1, 6]}]
        assert d["outputs"] == [{"name": "label", "dtype": "int64", "shape": [-1]},
                                {"name": "scores", "dtype": "float32", "shape": [-1, 3]}]
        for batch in (1, 5):
            x = masked_feeds(batch, seed=batch)
            r = client.score(x)
            assert r.server == SERVER_NAME and r.server_inference_ns > 0
            assert_masked(r.output, x, models_dir)
        xs = [masked_feeds(1 + i % 3, seed=10 + i) for i in range(6)]
        for x, r in zip(xs, client.score_stream(xs)):
            assert_masked(r.output, x, models_dir)
    finally:
        client.close()


def test_named_inputs_that_do_not_fit_are_bad_input(named_server):
    running, host, models_dir = named_server
    client = host.client(running.kind, running.target, "masked", timeout_s=10.0)
    try:
        assert_named_refusals(client, models_dir)
    finally:
        client.close()


def test_a_one_input_model_sent_by_name_answers_by_name(served):
    x = np.random.default_rng(3).random((3, 1, 784), dtype=np.float32)
    ref = reference_forward("ffnn", model_paths("ffnn").weights, x)
    client = served.make_client("ffnn", 10.0)
    try:
        r = client.score({"input_1": x})
        assert set(r.output) == {"output"}
        np.testing.assert_allclose(r.output["output"], ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(client.score(x).output, ref, atol=1e-4, rtol=0)   # unnamed still
    finally:
        client.close()
