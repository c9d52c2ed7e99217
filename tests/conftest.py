"""Shared fixtures: one real Kafka broker (KRaft, from Maven Central jars) per test session."""

from __future__ import annotations

import os

import pytest

from services.broker import launcher


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """A real broker: the one named by CRAYFISH_TEST_BOOTSTRAP, else a fresh local one."""
    given = os.environ.get("CRAYFISH_TEST_BOOTSTRAP")
    if given:
        launcher.wait_ready(given, timeout_s=30)
        yield given
        return
    handle = launcher.start()
    try:
        yield handle.bootstrap
    finally:
        launcher.stop(handle)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    from serving.models import build_model, default_models_dir

    d = default_models_dir()
    build_model("ffnn", d, seed=42)
    return d


@pytest.fixture()
def topics(kafka_bootstrap):
    """A run's fresh topics (input, output, dead letter, probe), one partition each; dropped after."""
    import uuid

    from crayfish.kafka import RunTopics, create_topics, delete_topics

    t = RunTopics.for_run(f"t{uuid.uuid4().hex[:8]}")
    create_topics(kafka_bootstrap, t, partitions=1)
    yield t
    delete_topics(kafka_bootstrap, t)


@pytest.fixture(scope="session")
def secure_kafka():
    """A secured broker of its own (SASL_SSL with SCRAM and PLAIN, mutual TLS, ACLs; no plaintext
    client port): a ``services.broker.secure.SecureBroker``, stopped and removed after the session."""
    from services.broker import secure

    handle = secure.start_secure()
    try:
        yield handle
    finally:
        secure.stop(handle)
