"""Our Scoring server (serving/scoring), started as its own process, through the workers' client:
the shared conformance suite."""

from __future__ import annotations

import pytest

from serving.clients import create_client
from tests.conformance_serving import *  # noqa: F401,F403
from tests.conformance_serving import Served


@pytest.fixture(scope="module")
def served(models_dir, tmp_path_factory):
    from serving.scoring.launcher import start

    server = start("ffnn", instances=2, models_dir=models_dir, log_dir=tmp_path_factory.mktemp("scoring"),
                   extra_models=[{"name": "ffnn-hung", "model": "ffnn", "backend": "sleep",
                                  "backend_options": {"delay_ms": 10000}, "warmup": False}])
    try:
        yield Served(make_client=lambda model, timeout_s: create_client("scoring", server.target, model,
                                                                         timeout_s=timeout_s, max_in_flight=8),
                     hung_model="ffnn-hung", server_name=server.server)
    finally:
        server.stop()
