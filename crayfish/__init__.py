"""The one small core every Python service shares.

- ``crayfish.v1``: stubs generated from ``protos/crayfish/v1`` by ``make protos`` (tools/gen_protos.py; never edit by hand).
- ``crayfish.tensor``: numpy <-> ``crayfish.v1.Tensor`` (raw little-endian bytes).
- ``crayfish.codec``: the Kafka payload codecs (``protobuf``, ``crayfish-json``).
- ``crayfish.kafka``: broker-facing helpers shared by generator, workers and collector.
"""
