"""A secured single-node Kafka broker on 127.0.0.1: for the tests, and for trying a secured setup
locally (``python -m services.broker.secure`` starts one and prints how to connect).

The same broker ``launcher`` runs (Apache Kafka, KRaft, one combined node), with no plaintext
client port:

- ``SASL_SSL`` (``sasl_bootstrap``): SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; inter-broker traffic
  too, as the broker's own SCRAM user ``admin``;
- ``SSL`` (``mtls_bootstrap``): mutual TLS, a client certificate signed by the broker's CA required;
- the KRaft controller listener, also mutual TLS (only the broker itself connects there).

Everything is made fresh per start in the broker's data dir (readable by its owner only): a CA, the
broker's certificate (127.0.0.1, localhost), a client certificate with its PKCS#8 key, and a random
password per user, each in its own file. Users: ``admin`` (super user), ``crayfish`` (full rights),
``reader`` (reads, writes and describes existing topics, uses groups, may not create topics); the client
certificate's principal (``User:CN=crayfish-client``) has full rights. ACLs are enforced by the
KRaft ``StandardAuthorizer``; the users' ACLs are created right after start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from crayfish.host.ports import free_ports
from crayfish.kafka import admin_config
from crayfish.kafka_client import SASL_MODULES, KafkaClient
from services.broker import launcher

USERS = ("admin", "crayfish", "reader")
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = (*SCRAM, "PLAIN")
BROKER_CN = "crayfish-broker"
CLIENT_CN = "crayfish-client"
CERT_DAYS = 2
ALL, READ, WRITE, DESCRIBE, CREATE = (AclOperation.ALL, AclOperation.READ, AclOperation.WRITE,
                                      AclOperation.DESCRIBE, AclOperation.CREATE)


@dataclass
class SecureBroker:
    sasl_bootstrap: str
    mtls_bootstrap: str
    pid: int
    data_dir: str
    log_file: str
    ca_file: str
    client_cert_file: str
    client_key_file: str
    password_files: dict[str, str] = field(default_factory=dict)
    mtls_principal: str = f"User:CN={CLIENT_CN}"

    def password(self, user: str) -> str:
        """``user``'s password (for tests that look for leaked secrets)."""
        return Path(self.password_files[user]).read_text().strip()

    def client(self, user: str = "crayfish", mechanism: str = "SCRAM-SHA-256") -> KafkaClient:
        """Client properties of ``user`` on the SASL_SSL listener (the password by reference)."""
        return KafkaClient(properties={
            "security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism, "sasl.username": user,
            "sasl.password": f"${{file:{self.password_files[user]}}}", "ssl.ca.location": self.ca_file})

    def mtls_client(self) -> KafkaClient:
        """Client properties for the mutual-TLS listener (the client certificate and key)."""
        return KafkaClient(properties={
            "security.protocol": "SSL", "ssl.ca.location": self.ca_file,
            "ssl.certificate.location": self.client_cert_file, "ssl.key.location": self.client_key_file})


def start_secure(state_dir: Path | None = None, heap: str = "1g", timeout_s: float = 90.0) -> SecureBroker:
    """Make certificates and passwords, format a fresh KRaft log dir with the SCRAM users, start the
    broker and create the ACLs; returns once the broker answers an authenticated client."""
    state_dir = Path(state_dir or launcher.default_state_dir())
    state_dir.mkdir(parents=True, exist_ok=True)
    data_dir = state_dir / f"kafka-secure-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(mode=0o700)
    sasl_port, mtls_port, controller_port = free_ports(3)
    handle = SecureBroker(
        sasl_bootstrap=f"127.0.0.1:{sasl_port}", mtls_bootstrap=f"127.0.0.1:{mtls_port}", pid=0,
        data_dir=str(data_dir), log_file=str(data_dir / "kafka.log"), ca_file=str(data_dir / "ca.pem"),
        client_cert_file=str(data_dir / "client.pem"), client_key_file=str(data_dir / "client.key"),
        password_files={u: str(data_dir / f"{u}.password") for u in USERS})
    try:
        _make_certificates(data_dir)
        passwords = {u: secrets.token_urlsafe(24) for u in USERS}
        for user, pw in passwords.items():
            _write_private(Path(handle.password_files[user]), pw + "\n")
        cmd = launcher.kafka_command(
            data_dir, sasl_port, controller_port, heap, Path(handle.log_file),
            properties=_server_properties(data_dir, sasl_port, mtls_port, controller_port, passwords),
            format_args=[a for u, pw in passwords.items() for m in SCRAM
                         for a in ("--add-scram", f"{m}=[name={u},password={pw}]")])
        with open(data_dir / "stdout.log", "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        handle.pid = proc.pid
        admin = handle.client("admin", "SCRAM-SHA-512")
        launcher.wait_ready(handle.sasl_bootstrap, timeout_s, proc, handle.log_file, client=admin)
        _create_acls(handle, admin, timeout_s)
    except BaseException:
        stop(handle)
        raise
    return handle


def stop(handle: SecureBroker) -> None:
    """Stop the broker (if it started) and remove its data dir: certificates and passwords too."""
    if handle.pid:
        launcher.stop(launcher.BrokerHandle(handle.sasl_bootstrap, handle.pid, handle.data_dir, handle.log_file))
    else:
        shutil.rmtree(handle.data_dir, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _openssl(d: Path, name: str, cn: str, *args: str) -> None:
    """A P-256 key (``name``.key, unencrypted PKCS#8) and its certificate (``name``.pem)."""
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc",
           "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", str(CERT_DAYS), "-subj", f"/CN={cn}", *args]
    run = subprocess.run(cmd, cwd=d, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise launcher.BrokerError(f"openssl failed for {name}: {run.stderr.strip()}")
    os.chmod(d / f"{name}.key", 0o600)


def _make_certificates(d: Path) -> None:
    _openssl(d, "ca", "crayfish-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    signed = ("-CA", "ca.pem", "-CAkey", "ca.key", "-addext", "basicConstraints=critical,CA:FALSE")
    _openssl(d, "server", BROKER_CN, *signed, "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _openssl(d, "client", CLIENT_CN, *signed)
    # The broker's PEM key store: its key and certificate chain in one file.
    _write_private(d / "server-keystore.pem", "".join((d / f).read_text() for f in ("server.key", "server.pem",
                                                                                     "ca.pem")))


def _server_properties(d: Path, sasl_port: int, mtls_port: int, controller_port: int,
                       passwords: dict[str, str]) -> dict[str, str]:
    def jaas(mechanism: str, extra: str = "") -> str:
        return f'{SASL_MODULES[mechanism]} required username="admin" password="{passwords["admin"]}"{extra};'

    plain_users = "".join(f' user_{u}="{pw}"' for u, pw in passwords.items())
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{mtls_port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{mtls_port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": ",".join(MECHANISMS),
        **{f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": jaas(m) for m in SCRAM},
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas("PLAIN", plain_users),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(d / "server-keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(d / "ca.pem"),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "true",
        # admin: the broker's inter-broker user; CN=crayfish-broker: the broker on the controller listener.
        "super.users": f"User:admin;User:CN={BROKER_CN}",
    }


def _acls(mtls_principal: str) -> list[AclBinding]:
    """Full rights for ``crayfish`` and the client certificate; ``reader`` may use existing topics
    and groups but not create topics. A resource with any ACL denies whoever has no ALLOW there,
    so every user with rights gets them explicitly."""
    cluster, topics, groups, txns = ((ResourceType.BROKER, "kafka-cluster"), (ResourceType.TOPIC, "*"),
                                     (ResourceType.GROUP, "*"), (ResourceType.TRANSACTIONAL_ID, "*"))
    rules = [(p, r, ALL, AclPermissionType.ALLOW) for p in ("User:crayfish", mtls_principal)
             for r in (cluster, topics, groups, txns)]
    rules += [("User:reader", topics, op, AclPermissionType.ALLOW)
              for op in (READ, WRITE, DESCRIBE, AclOperation.DESCRIBE_CONFIGS)]
    rules += [("User:reader", groups, op, AclPermissionType.ALLOW) for op in (READ, DESCRIBE)]
    rules += [("User:reader", cluster, DESCRIBE, AclPermissionType.ALLOW)]
    rules += [("User:reader", r, CREATE, AclPermissionType.DENY) for r in (cluster, topics)]
    return [AclBinding(rtype, name, ResourcePatternType.LITERAL, principal, "*", op, perm)
            for principal, (rtype, name), op, perm in rules]


def _create_acls(handle: SecureBroker, admin: KafkaClient, timeout_s: float) -> None:
    """Create the ACLs as ``admin``; return once the broker itself enforces all of them."""
    client = AdminClient(admin_config(handle.sasl_bootstrap, admin))
    wanted = _acls(handle.mtls_principal)
    for fut in client.create_acls(wanted, request_timeout=timeout_s).values():
        fut.result(timeout=timeout_s)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    deadline = time.monotonic() + timeout_s
    while len(client.describe_acls(everything, request_timeout=10).result(timeout=10)) < len(wanted):
        if time.monotonic() > deadline:
            raise launcher.BrokerError(f"ACLs not in force after {timeout_s:.0f}s")
        time.sleep(launcher.POLL_S)


def main() -> None:
    import json
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    handle = start_secure()
    signal.signal(signal.SIGTERM, interrupt)
    print(f"SASL_SSL {handle.sasl_bootstrap}  (users {', '.join(USERS)}; mechanisms {', '.join(MECHANISMS)})")
    print(json.dumps(handle.client().properties, indent=2))
    print(f"mutual TLS {handle.mtls_bootstrap}")
    print(json.dumps(handle.mtls_client().properties, indent=2))
    print(f"data dir {handle.data_dir} (removed on exit); Ctrl-C stops the broker", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop(handle)


if __name__ == "__main__":
    main()
