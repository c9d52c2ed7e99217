"""Kafka Streams engine (Java, same crayfish.v1 contract): see ``__main__`` for how it maps to
Kafka Streams, its engine_options and how it scales out; ``build`` builds the jar; README.md."""
