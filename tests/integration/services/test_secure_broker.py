"""The secured test broker (services.broker.secure) against real clients: SASL_SSL with SCRAM and
PLAIN, mutual TLS, ACLs, plaintext refused, and the Java translation of KafkaClient properties."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from crayfish.kafka import RunTopics, admin_config, create_topics
from crayfish.kafka_client import KafkaClient
from tests.support.secure_kafka import (
    java_properties,
    java_tool,
    produce_and_consume,
    refusal,
)

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def topic(secure_kafka) -> str:
    """One topic, created by ``crayfish`` (full rights), shared by this file's tests."""
    topics = RunTopics.for_run(f"s{uuid.uuid4().hex[:8]}")
    create_topics(secure_kafka.sasl_bootstrap, topics, partitions=1, only=[topics.input],
                  client=secure_kafka.client())
    return topics.input


def with_password(client: KafkaClient, tmp_path: Path, password: str) -> KafkaClient:
    (tmp_path / "wrong.password").write_text(password)
    return KafkaClient(properties={**client.properties, "sasl.password": f"${{file:{tmp_path / 'wrong.password'}}}"})


def test_plaintext_admin_client_is_refused_quickly(secure_kafka):
    t0 = time.monotonic()
    with pytest.raises(KafkaException):
        AdminClient(admin_config(secure_kafka.sasl_bootstrap)).list_topics(timeout=2)
    assert time.monotonic() - t0 < 10
    assert refusal(secure_kafka.mtls_bootstrap) != ""          # no plaintext on the mTLS port either


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_client_produces_and_consumes(secure_kafka, topic, mechanism):
    value = f"{mechanism}-{uuid.uuid4().hex}".encode()
    assert value in produce_and_consume(secure_kafka.sasl_bootstrap, secure_kafka.client(mechanism=mechanism),
                                        topic, value)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_wrong_password_is_refused(secure_kafka, tmp_path, mechanism):
    bad = with_password(secure_kafka.client(mechanism=mechanism), tmp_path, "not-the-password")
    assert "_AUTHENTICATION" in refusal(secure_kafka.sasl_bootstrap, bad)


def test_mtls_client_produces_and_consumes(secure_kafka, topic):
    value = f"mtls-{uuid.uuid4().hex}".encode()
    assert value in produce_and_consume(secure_kafka.mtls_bootstrap, secure_kafka.mtls_client(), topic, value)


def test_mtls_without_client_certificate_is_refused(secure_kafka):
    no_cert = KafkaClient(properties={"security.protocol": "SSL", "ssl.ca.location": secure_kafka.ca_file})
    assert "certificate" in refusal(secure_kafka.mtls_bootstrap, no_cert)


def test_reader_uses_existing_topics_but_cannot_create_one(secure_kafka, topic):
    reader = secure_kafka.client("reader", "SCRAM-SHA-512")
    value = f"reader-{uuid.uuid4().hex}".encode()
    assert value in produce_and_consume(secure_kafka.sasl_bootstrap, reader, topic, value,
                                        group=f"reader-{uuid.uuid4().hex[:6]}")
    with pytest.raises(RuntimeError, match="(?i)authorization failed"):
        create_topics(secure_kafka.sasl_bootstrap, RunTopics.for_run(f"r{uuid.uuid4().hex[:8]}"),
                      only=[f"reader-{uuid.uuid4().hex[:8]}"], client=reader, timeout_s=10)


def test_java_clients_work_with_translated_properties(secure_kafka, topic, tmp_path):
    """KafkaClient.java() against the real broker: the JAAS line (SCRAM, PLAIN) with a PEM trust
    store, and the inline PEM key store of mutual TLS. All three JVMs at once (each starts slowly)."""
    cases = {"scram": (secure_kafka.sasl_bootstrap, secure_kafka.client(mechanism="SCRAM-SHA-512")),
             "plain": (secure_kafka.sasl_bootstrap, secure_kafka.client(mechanism="PLAIN")),
             "mtls": (secure_kafka.mtls_bootstrap, secure_kafka.mtls_client())}
    runs = {name: java_tool("kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap,
                            "--command-config", str(java_properties(client, tmp_path / f"{name}.properties")),
                            "--describe", "--entity-type", "topics", "--entity-name", topic)
            for name, (bootstrap, client) in cases.items()}
    try:
        outputs = {name: (proc.communicate(timeout=60)[0], proc.returncode) for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            proc.kill()
        for f in tmp_path.glob("*.properties"):
            f.unlink()
    for name, (out, rc) in outputs.items():
        assert rc == 0 and f"configs for topic {topic} are" in out, f"{name}: {out[-2000:]}"


def test_no_password_in_broker_logs(secure_kafka, topic):
    logs = "".join(p.read_text(errors="replace") for p in Path(secure_kafka.data_dir).glob("*.log"))
    assert logs and not [u for u in ("admin", "crayfish", "reader") if secure_kafka.password(u) in logs]
