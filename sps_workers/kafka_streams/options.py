"""engine_options of the Kafka Streams engine (what each does: ``__main__``'s docstring).

The Java worker reads the same keys (Settings.java, ENGINE_OPTION_KEYS) and rejects unknown ones
with the same message; this class lets the runner check them before anything starts, and gives the
launcher ``jvm_options``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from sps_workers.options import EngineOptions


class KafkaStreamsOptions(EngineOptions):
    ENGINE: ClassVar[str] = "kafka-streams"

    commit_interval_ms: int = Field(100, ge=0, description="Kafka Streams commit.interval.ms.")
    poll_ms: int | None = Field(None, ge=0, description="poll.ms, the longest an idle thread blocks in poll; "
                                                        "null = Kafka Streams' 100.")
    warmup_ms: int = Field(2000, ge=0, description="Each embedded instance scores zero batches this long before "
                                                   "joining the group (the JIT compiles the path); 0 = off.")
    streams_config: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] = Field(
        default_factory=dict, description="Further Kafka Streams / consumer / producer properties, applied last.")
    jvm_options: list[str] = Field(default_factory=list, description="JVM arguments for the launcher, e.g. "
                                                                     "['-Xmx1g'].")
