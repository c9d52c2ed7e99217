"""The fast group: no broker, no server, no engine. A unit test that asks for the broker fails
here; it belongs in tests/integration/."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap():
    pytest.fail("a unit test asked for the Kafka broker: move it to tests/integration/")
