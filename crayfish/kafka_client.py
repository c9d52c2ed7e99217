"""Kafka client properties of a cluster: security (SASL, TLS, mutual TLS) and any other client
setting, given once and handed unchanged to every client of a run.

**Names.** Properties use librdkafka's names (the names of confluent-kafka, Bytewax and every
librdkafka-based client): ``security.protocol``, ``sasl.mechanisms``, ``sasl.username``,
``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``,
``ssl.key.password``, ``ssl.endpoint.identification.algorithm``. Clients that name things otherwise
get a translation made here, from the same properties:

- :meth:`KafkaClient.java` -- the Java clients (Flink and Spark connectors, Kafka Streams):
  ``sasl.jaas.config`` from the user name and password, PEM trust and key stores;
- :meth:`KafkaClient.security` -- the plain facts, for clients that take objects (aiokafka under
  Faust, franz-go in the Go worker reads the same properties itself).

Any other property (``client.rack``, ``request.timeout.ms``, ...) passes unchanged to every client.

**Secrets** never live in an experiment file or a settings file: a secret property's value is a
reference, ``${env:NAME}`` (an environment variable) or ``${file:PATH}`` (a file's whole content,
trailing newline dropped), resolved by each process when it builds its client -- so the settings
JSON the runner writes into a run folder holds only the reference. A properties file
(``properties_file``, Java ``.properties`` syntax) may hold literal values; every process reads it
itself, so its contents never travel through a run folder either. :meth:`KafkaClient.redacted`
is what may be shown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

REFERENCE = re.compile(r"\$\{(env|file):([^}]+)\}")
REDACTED = "[redacted]"

# librdkafka names only the Java clients call otherwise: given here, they would fail every
# librdkafka client ("No such configuration property") -> the name to use instead.
JAVA_ONLY = {
    "sasl.mechanism": "sasl.mechanisms",
    "sasl.jaas.config": "sasl.username and sasl.password (the Java clients get their JAAS line from them)",
    "ssl.truststore.location": "ssl.ca.location (a PEM file)",
    "ssl.truststore.type": "ssl.ca.location (a PEM file)",
    "ssl.keystore.type": "ssl.certificate.location and ssl.key.location (PEM files)",
}

SASL_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class KafkaClientError(ValueError):
    """A client property that cannot be used: one line naming the property."""


def is_secret(name: str) -> bool:
    """Whether a property holds a secret (its value must be a reference, and is never shown)."""
    n = name.lower()
    return any(word in n for word in ("password", "secret", "jaas", "token", "credential")) or n.endswith(".pem")


def resolve_value(name: str, value: str) -> str:
    """``value`` with its ``${env:NAME}`` / ``${file:PATH}`` references replaced."""
    def one(match: re.Match) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in os.environ:
                raise KafkaClientError(f"{name}: environment variable {ref} is not set")
            return os.environ[ref]
        try:
            return Path(ref).expanduser().read_text().rstrip("\n")
        except OSError as exc:
            raise KafkaClientError(f"{name}: cannot read {ref} ({exc.strerror or exc})") from None
    return REFERENCE.sub(one, str(value))


def read_properties_file(path: str | Path) -> dict[str, str]:
    """A Java ``.properties`` file: ``key=value`` or ``key: value`` lines, ``#``/``!`` comments."""
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise KafkaClientError(f"properties_file: cannot read {path} ({exc.strerror or exc})") from None
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, _, value = re.split(r"\s*([=:])\s*", line, maxsplit=1) if re.search(r"[=:]", line) else (line, "", "")
        props[key.strip()] = value.strip()
    return props


@dataclass(frozen=True)
class Security:
    """The security facts of resolved properties, for clients configured by objects."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    verify_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self):
        """An ``ssl.SSLContext`` trusting ``ca_file`` (system roots if none), presenting the client
        certificate where one is given, checking the host name unless told not to; None without
        TLS. Raises KafkaClientError naming the property (never OpenSSL's password prompt)."""
        if not self.tls:
            return None
        import ssl  # lazy: only TLS clients need it

        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaClientError(f"ssl.ca.location: cannot load {self.ca_file} ({exc})") from None
        ctx.check_hostname = self.verify_hostname
        if self.cert_file:
            def no_password():
                raise KafkaClientError(f"ssl.key.location: {self.key_file} is encrypted; give ssl.key.password")
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file, self.key_password or no_password)
            except (OSError, ssl.SSLError) as exc:
                raise KafkaClientError(f"ssl.certificate.location and ssl.key.location: cannot load {self.cert_file} "
                                       f"with {self.key_file} (wrong ssl.key.password?) ({exc})") from None
        return ctx


class KafkaClient(BaseModel):
    """Client properties of the cluster, as every service's settings carry them (references only)."""

    properties: dict[str, str] = Field(default_factory=dict, description="librdkafka client properties; a secret's value is ${env:NAME} or ${file:PATH}.")
    properties_file: str | None = Field(None, description="A .properties file every process reads itself (may hold literal secrets); properties given above win.")

    def check(self) -> None:
        """Raise :class:`KafkaClientError` naming the first property that cannot work."""
        for name, value in self.properties.items():
            if is_secret(name) and not REFERENCE.fullmatch(str(value).strip()):
                raise KafkaClientError(f"{name}: a secret is never written in the experiment; give "
                                       "${env:NAME} (an environment variable) or ${file:PATH} (a file)")
        props = self.resolved()
        for name in props:
            if name in JAVA_ONLY:
                raise KafkaClientError(f"{name}: a Java client name; give {JAVA_ONLY[name]}")
        protocol = props.get("security.protocol", "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise KafkaClientError(f"security.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        sec = self.security()
        if sec.sasl:
            if sec.mechanism not in SASL_MODULES:
                raise KafkaClientError(f"sasl.mechanisms: {sec.mechanism!r}; supported: {', '.join(SASL_MODULES)}")
            if not (sec.username and sec.password):
                raise KafkaClientError(f"sasl.username and sasl.password are needed with {protocol}")
        for name in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            if name in props and not Path(props[name]).expanduser().is_file():
                raise KafkaClientError(f"{name}: no file at {props[name]}")
        if bool(sec.cert_file) != bool(sec.key_file):
            raise KafkaClientError("ssl.certificate.location and ssl.key.location: mutual TLS needs both")

    def resolved(self) -> dict[str, str]:
        """Every property with its references resolved: for librdkafka clients (confluent-kafka)."""
        merged = read_properties_file(self.properties_file) if self.properties_file else {}
        merged.update(self.properties)
        return {k: resolve_value(k, v) for k, v in merged.items()}

    def redacted(self) -> dict[str, str]:
        """What may be shown or written: references as given, literal secrets replaced."""
        shown = {k: (REDACTED if is_secret(k) else v)
                 for k, v in (read_properties_file(self.properties_file) if self.properties_file else {}).items()}
        shown.update({k: (v if REFERENCE.fullmatch(str(v).strip()) or not is_secret(k) else REDACTED)
                      for k, v in self.properties.items()})
        return shown

    def security(self) -> Security:
        props = self.resolved()
        return Security(
            protocol=props.get("security.protocol", "PLAINTEXT").upper(),
            mechanism=(props.get("sasl.mechanisms") or props.get("sasl.mechanism") or "PLAIN").upper(),
            username=props.get("sasl.username"), password=props.get("sasl.password"),
            ca_file=props.get("ssl.ca.location"), cert_file=props.get("ssl.certificate.location"),
            key_file=props.get("ssl.key.location"), key_password=props.get("ssl.key.password"),
            verify_hostname=props.get("ssl.endpoint.identification.algorithm", "https").lower() != "none")

    def java(self) -> dict[str, str]:
        """The same properties for the Java Kafka clients (resolved): the security ones translated
        (JAAS line, PEM stores), the rest unchanged."""
        props = self.resolved()
        sec = self.security()
        out = {k: v for k, v in props.items() if k not in SECURITY_PROPERTIES}
        out["security.protocol"] = sec.protocol
        if sec.sasl:
            out["sasl.mechanism"] = sec.mechanism
            out["sasl.jaas.config"] = (f'{SASL_MODULES[sec.mechanism]} required username="{_jaas(sec.username)}" '
                                       f'password="{_jaas(sec.password)}";')
        if sec.tls:
            if sec.ca_file:
                out["ssl.truststore.type"] = "PEM"
                out["ssl.truststore.location"] = str(Path(sec.ca_file).expanduser())
            if sec.cert_file:
                # Inline PEM: the key must be PKCS#8 ("BEGIN PRIVATE KEY" or "BEGIN ENCRYPTED PRIVATE KEY").
                out["ssl.keystore.type"] = "PEM"
                out["ssl.keystore.certificate.chain"] = Path(sec.cert_file).expanduser().read_text()
                out["ssl.keystore.key"] = Path(sec.key_file).expanduser().read_text()
                if sec.key_password:
                    out["ssl.key.password"] = sec.key_password
            out["ssl.endpoint.identification.algorithm"] = "https" if sec.verify_hostname else ""
        return out

    def secret_values(self) -> list[str]:
        """Every resolved secret of these properties and of their Java translation (the JAAS line,
        an inline PEM key), longest first; each also as a JAAS line and a SQL literal quote it, and a
        multi-line one (a PEM key) line by line: what a process holding them scrubs (:func:`redact`)
        from text it prints, e.g. an engine's error that quotes its connector options."""
        found = set()
        for props in (self.resolved(), self.java()):
            found.update(v for k, v in props.items() if v and (is_secret(k) or k == "ssl.keystore.key"))
        for v in list(found):
            found.update((_jaas(v), v.replace("'", "''")))
            found.update(line.strip() for line in v.splitlines() if len(line.strip()) >= 16)
        return sorted(found, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.properties or self.properties_file)


# The properties the translations above take over; every other one passes unchanged.
SECURITY_PROPERTIES = {"security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password",
                       "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
                       "ssl.endpoint.identification.algorithm"}


def _jaas(value: str | None) -> str:
    return (value or "").replace("\\", "\\\\").replace('"', '\\"')


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` (:meth:`KafkaClient.secret_values`) replaced by [redacted]."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def client_properties(client: KafkaClient | None) -> dict[str, str]:
    """Resolved librdkafka properties of ``client`` (empty for None): merged into every
    confluent-kafka configuration by :mod:`crayfish.kafka`."""
    return client.resolved() if client else {}
