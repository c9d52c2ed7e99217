"""The two extension points of serving, proven the way their checklists say, with throwaway code in
a temporary package (a folder put on ``sys.path``):

(a) an embedded backend -- one module plus one line in ``serving.embedded.registry.BACKEND_MODULES``
    (the checklist in :mod:`serving.embedded`) -- scoring through :func:`create_scorer` and through
    our Scoring server;
(b) an external server -- one folder plus one line in ``serving.external.SERVER_PACKAGES`` (the
    checklist in :mod:`serving.external`) -- started through the registry, called with its own
    client through :func:`create_client`, passing the shared conformance suite unchanged.

The "one line" is the list append the checklist asks for, done here on the live list (and undone
after the module).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from services.runner.experiment import ServingConfig
from serving import external
from serving.clients import client_class, create_client
from serving.embedded import BACKENDS, backend, create_scorer, registry
from serving.models import MODELS, model_paths, reference_forward
from serving.scoring import SERVER_NAME, ScoringSettings
from serving.scoring.server import build_server
from tests.support.conformance_serving import *  # noqa: F401,F403
from tests.support.conformance_serving import Served

# (a) a backend: the model's ONNX Runtime output, doubled -- a result no shipped backend gives
BACKEND_MODULE = '''
    """A throwaway embedded backend: ONNX Runtime's answer, times two."""

    from serving.embedded.onnxruntime_backend import OnnxRuntimeScorer


    class DoubledOnnxScorer(OnnxRuntimeScorer):
        name = "onnx-doubled"

        def _score(self, x):
            return 2.0 * super()._score(x)


    SCORERS = (DoubledOnnxScorer,)
'''

# (b) a server: our Scoring server under another name, with a client kind of its own
SERVER_INIT = '''
    """A throwaway external server: our Scoring server, registered as "scoring-twin"."""

    from serving.server import ServerSpec

    SERVERS = (ServerSpec("scoring-twin", client="scoring-twin"),)
'''
SERVER_LAUNCHER = '''
    """Start the twin: our Scoring server's launcher, its target under the twin's client kind."""

    import dataclasses

    from serving.scoring import launcher


    def start(model="ffnn", instances=1, models_dir=None, log_dir=".", **options):
        srv = launcher.start(model, instances, models_dir, log_dir, **options)
        return dataclasses.replace(srv, targets={"scoring-twin": srv.target})
'''
SERVER_CLIENT = '''
    """The twin's client: the Scoring protocol under the kind "scoring-twin"."""

    from serving.scoring.client import ScoringClient


    class TwinClient(ScoringClient):
        kind = "scoring-twin"


    CLIENTS = (TwinClient,)
'''

HUNG = {"name": "ffnn-hung", "model": "ffnn", "backend": "sleep", "backend_options": {"delay_ms": 10000},
        "warmup": False}


def _write(path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory):
    """The temporary package ``crayfish_throwaway`` on sys.path, its backend module and its server
    package each registered with one line; everything undone afterwards."""
    root = tmp_path_factory.mktemp("throwaway")
    pkg = root / "crayfish_throwaway"
    pkg.mkdir()
    _write(pkg / "__init__.py", '"""Throwaway extensions (tests/integration/serving/test_extension_serving.py)."""\n')
    _write(pkg / "doubled_backend.py", BACKEND_MODULE)
    twin = pkg / "twin"
    twin.mkdir()
    _write(twin / "__init__.py", SERVER_INIT)
    _write(twin / "launcher.py", SERVER_LAUNCHER)
    _write(twin / "client.py", SERVER_CLIENT)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        mp.setattr(registry, "BACKEND_MODULES", [*registry.BACKEND_MODULES, "crayfish_throwaway.doubled_backend"])
        mp.setattr(external, "SERVER_PACKAGES", [*external.SERVER_PACKAGES, "crayfish_throwaway.twin"])
        yield
    assert "onnx-doubled" not in BACKENDS and "scoring-twin" not in external.SERVERS


def _x(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *MODELS["ffnn"].input_shape), dtype=np.float32)


def _reference(x: np.ndarray, models_dir) -> np.ndarray:
    return reference_forward("ffnn", model_paths("ffnn", models_dir).weights, x)


# -- (a) the backend ----------------------------------------------------------------------------
def test_backend_is_registered_with_its_declarations(throwaway):
    b = backend("onnx-doubled")
    assert BACKENDS["onnx-doubled"] is b and b.__module__ == "crayfish_throwaway.doubled_backend"
    assert b.environment == "core" and b.exporter is None
    # its options and their mapping from the experiment's fields come with it (inherited here)
    assert b.options_from(threads=2, inter_threads=1, device="cpu") == \
        {"intra_op_threads": 2, "inter_op_threads": 1, "device": "cpu"}
    # the experiment schema knows it from the registry alone
    assert ServingConfig(backend="onnx-doubled").backend == "onnx-doubled"
    with pytest.raises(ValueError, match="unknown embedded backend 'onnx-tripled'"):
        ServingConfig(backend="onnx-tripled")


def test_backend_scores_through_create_scorer(throwaway, models_dir):
    x = _x(4, seed=1)
    with create_scorer("onnx-doubled", "ffnn", models_dir, intra_op_threads=1) as scorer:
        y = scorer.score(x)
    np.testing.assert_allclose(y, 2.0 * _reference(x, models_dir), atol=2e-4, rtol=0)


def test_backend_scores_through_our_scoring_server(throwaway, models_dir):
    settings = ScoringSettings(backend="onnx-doubled", models_dir=models_dir, instances=2,
                               backend_options=backend("onnx-doubled").options_from(threads=1))
    server, core, port = build_server(settings)
    server.start()
    client = create_client("scoring", f"127.0.0.1:{port}", "ffnn", timeout_s=10.0)
    try:
        assert client.describe()["backend"] == "onnx-doubled"
        for seed, batch in enumerate((1, 8)):
            x = _x(batch, seed)
            r = client.score(x)
            assert r.server == SERVER_NAME
            np.testing.assert_allclose(r.output, 2.0 * _reference(x, models_dir), atol=2e-4, rtol=0)
    finally:
        client.close()
        server.stop(0).wait()
        core.close(timeout=1.0)


# -- (b) the server -----------------------------------------------------------------------------
def test_server_is_registered_with_its_spec_and_client(throwaway):
    spec = external.server_spec("scoring-twin")
    assert (spec.client, spec.worker_env, spec.package) == ("scoring-twin", "core", "crayfish_throwaway.twin")
    assert external.available("scoring-twin")
    assert client_class("scoring-twin").__module__ == "crayfish_throwaway.twin.client"
    # the experiment schema knows it from the registry alone
    assert ServingConfig(kind="external", server="scoring-twin").server == "scoring-twin"


@pytest.fixture(scope="module")
def twin(throwaway, models_dir, tmp_path_factory):
    srv = external.start_server("scoring-twin", model="ffnn", instances=2, models_dir=models_dir,
                                log_dir=tmp_path_factory.mktemp("twin"), extra_models=[HUNG])
    try:
        yield srv
    finally:
        srv.stop()
    assert srv.service is None


@pytest.fixture(scope="module")
def served(twin):
    # what the runner reads of any server: its target for the spec's client kind, its name, its tree
    assert twin.kind == "scoring-twin" and twin.server == SERVER_NAME and twin.service.alive()
    target = twin.targets[external.server_spec("scoring-twin").client]
    return Served(make_client=lambda model, timeout_s: create_client("scoring-twin", target, model,
                                                                      timeout_s=timeout_s, max_in_flight=8),
                  hung_model="ffnn-hung", server_name=SERVER_NAME)
