"""The contracts and the host primitives every deployable shares: the bottom layer
(docs/architecture.md), importing nothing of the project above it.

Contracts and their Python binding:

- ``crayfish.v1``: stubs generated from ``protos/crayfish/v1`` by ``make protos`` (tools/gen_protos.py; never edit by hand).
- ``crayfish.tensor``: numpy <-> ``crayfish.v1.Tensor`` (raw little-endian bytes).
- ``crayfish.codec``: the registry of Kafka payload codecs — ``codec_base`` (the interface),
  ``codec_protobuf``, ``codec_json`` (byte-compatible with the original Crayfish; its Kafka headers in
  ``codec_json_headers``, Java's float printing in ``java_float``).
- ``crayfish.payloads``: the seeded input pools every service rebuilds the same way (generator,
  prediction checker, Flink's standalone job).

Host primitives:

- ``crayfish.kafka``: broker-facing helpers (client settings, run topics, produce with retry,
  readiness of a consumer group, clock-skew probes).
- ``crayfish.clock``: the host clock and the bound on its offset from the broker's.
- ``crayfish.host``: paths and caches, free ports, service processes, per-deployable environments.
"""
