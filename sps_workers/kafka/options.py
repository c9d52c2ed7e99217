"""engine_options of the baseline engine: none (every key is rejected naming it)."""

from __future__ import annotations

from typing import ClassVar

from sps_workers.options import EngineOptions


class KafkaOptions(EngineOptions):
    ENGINE: ClassVar[str] = "kafka"
