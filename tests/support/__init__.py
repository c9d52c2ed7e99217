"""What the test groups share: Kafka and process helpers, and the conformance suites every
engine and every server passes unchanged."""
