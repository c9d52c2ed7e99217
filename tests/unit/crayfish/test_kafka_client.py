"""Kafka client properties: secret references, the checks that name a property, the Java translation."""

from __future__ import annotations

import pytest

from crayfish.kafka import admin_config, consumer_config, producer_config
from crayfish.kafka_client import KafkaClient, KafkaClientError, read_properties_file, redact


def scram(tmp_path, **extra) -> KafkaClient:
    (tmp_path / "ca.pem").write_text("CA\n")
    return KafkaClient(properties={"security.protocol": "sasl_ssl", "sasl.mechanisms": "SCRAM-SHA-512",
                                   "sasl.username": "alice", "sasl.password": "${env:CRAYFISH_TEST_PW}",
                                   "ssl.ca.location": str(tmp_path / "ca.pem"), **extra})


def test_references_resolve_from_the_environment_and_from_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAYFISH_TEST_PW", "s3cret")
    (tmp_path / "key-pw").write_text("k3y\n")
    client = scram(tmp_path, **{"ssl.key.password": f"${{file:{tmp_path / 'key-pw'}}}"})
    resolved = client.resolved()
    assert resolved["sasl.password"] == "s3cret"
    assert resolved["ssl.key.password"] == "k3y"          # trailing newline dropped
    assert client.properties["sasl.password"] == "${env:CRAYFISH_TEST_PW}"   # what settings carry


def test_every_client_config_carries_the_resolved_properties(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAYFISH_TEST_PW", "s3cret")
    client = scram(tmp_path)
    for conf in (admin_config("h:1", client), producer_config("h:1", client),
                 consumer_config("h:1", "g", client, **{"client.id": "x"})):
        assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.password"] == "s3cret"
    assert consumer_config("h:1", "g", client)["group.id"] == "g"
    assert "security.protocol" not in producer_config("h:1")


def test_a_literal_secret_in_the_experiment_is_refused_naming_the_property(tmp_path):
    with pytest.raises(KafkaClientError, match=r"^sasl.password: a secret is never written"):
        scram(tmp_path, **{"sasl.password": "hunter2"}).check()


def test_a_missing_variable_or_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("CRAYFISH_TEST_PW", raising=False)
    with pytest.raises(KafkaClientError, match="sasl.password: environment variable CRAYFISH_TEST_PW is not set"):
        scram(tmp_path).check()
    monkeypatch.setenv("CRAYFISH_TEST_PW", "x")
    with pytest.raises(KafkaClientError, match="ssl.key.password: cannot read /nonexistent"):
        scram(tmp_path, **{"ssl.key.password": "${file:/nonexistent}"}).check()


@pytest.mark.parametrize("bad, message", [
    ({"security.protocol": "TLS"}, "security.protocol: 'TLS' is not one of"),
    ({"sasl.mechanisms": "GSSAPI"}, "sasl.mechanisms: 'GSSAPI'; supported"),
    ({"sasl.jaas.config": "${env:CRAYFISH_TEST_PW}"}, "sasl.jaas.config: a Java client name; give sasl.username"),
    ({"ssl.ca.location": "/no/such/ca.pem"}, "ssl.ca.location: no file at /no/such/ca.pem"),
    ({"ssl.certificate.location": __file__}, "mutual TLS needs both"),
])
def test_unusable_properties_are_named(tmp_path, monkeypatch, bad, message):
    monkeypatch.setenv("CRAYFISH_TEST_PW", "x")
    with pytest.raises(KafkaClientError, match=message):
        scram(tmp_path, **bad).check()


def test_sasl_needs_a_user_and_a_password(tmp_path):
    with pytest.raises(KafkaClientError, match="sasl.username and sasl.password are needed with SASL_PLAINTEXT"):
        KafkaClient(properties={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN"}).check()


def test_the_java_clients_get_a_jaas_line_and_pem_stores(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAYFISH_TEST_PW", 'p"w')
    (tmp_path / "cert.pem").write_text("CERT")
    (tmp_path / "key.pem").write_text("KEY")
    java = scram(tmp_path, **{"ssl.certificate.location": str(tmp_path / "cert.pem"),
                              "ssl.key.location": str(tmp_path / "key.pem"), "client.rack": "r1"}).java()
    assert java["security.protocol"] == "SASL_SSL" and java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert java["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                        'username="alice" password="p\\"w";')
    assert java["ssl.truststore.type"] == "PEM" and java["ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert (java["ssl.keystore.type"], java["ssl.keystore.certificate.chain"], java["ssl.keystore.key"]) == ("PEM", "CERT", "KEY")
    assert java["client.rack"] == "r1"                      # anything else passes unchanged
    assert not {"sasl.mechanisms", "sasl.username", "sasl.password", "ssl.ca.location"} & set(java)
    plain = KafkaClient(properties={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
                                    "sasl.username": "u", "sasl.password": "${env:CRAYFISH_TEST_PW}"}).java()
    assert plain["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert "ssl.truststore.type" not in plain


def test_a_properties_file_is_read_by_each_process_and_the_experiment_wins(tmp_path):
    f = tmp_path / "client.properties"
    f.write_text("# company defaults\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanisms: PLAIN\n"
                 "sasl.username = bob\nsasl.password=literal-in-file\n! other comment\nclient.rack=a\n")
    assert read_properties_file(f)["sasl.mechanisms"] == "PLAIN"
    client = KafkaClient(properties={"client.rack": "b"}, properties_file=str(f))
    client.check()
    assert client.resolved()["sasl.password"] == "literal-in-file" and client.resolved()["client.rack"] == "b"
    assert client.redacted()["sasl.password"] == "[redacted]" and client.redacted()["sasl.username"] == "bob"
    assert "literal-in-file" not in client.model_dump_json()   # settings carry the file's path only


def test_an_empty_client_changes_nothing():
    assert not KafkaClient() and KafkaClient().resolved() == {}
    assert admin_config("h:1", KafkaClient()) == admin_config("h:1")


def test_secret_values_cover_every_form_a_secret_is_printed_in(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAYFISH_TEST_PW", "it's \"quoted\"")
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"
    (tmp_path / "cert.pem").write_text("CERT")
    (tmp_path / "key.pem").write_text(key)
    client = scram(tmp_path, **{"ssl.certificate.location": str(tmp_path / "cert.pem"),
                                "ssl.key.location": str(tmp_path / "key.pem")})
    secrets = client.secret_values()
    java = client.java()
    text = (f"jaas={java['sasl.jaas.config']} sql='{java['sasl.jaas.config'].replace(chr(39), chr(39) * 2)}' "
            f"raw={client.resolved()['sasl.password']} keyline=MIGHAgEAMBMGByqGSM49AgEGCCqGSM49")
    shown = redact(text, secrets)
    assert "quoted" not in shown and "MIGHAgEAMBMGByqGSM49" not in shown and shown.count("[redacted]") >= 4, shown
    assert redact("user=alice", secrets) == "user=alice"   # a user name is not a secret
    assert KafkaClient().secret_values() == []
