"""Stream-processing workers: one folder per engine, all speaking the crayfish.v1 contract.

Every engine does the same job: read DataBatch records from the input topic, score them with the
configured backend, write ScoredBatch records to the output topic and DeadLetter records (with a
reason) to the dead-letter topic; commit input offsets only after the output is delivered.

How to add an engine
--------------------
1. Create ``sps_workers/<engine>/`` with a ``__main__`` that accepts ``--config <json | @file>`` (a
   :class:`sps_workers.settings.WorkerSettings` document) and runs until SIGTERM, then stops cleanly
   (flush outputs, commit offsets, end spans). A non-Python engine (e.g. Kafka Streams in Java) keeps
   a thin Python ``__main__`` that builds it if needed and execs it with the same config.
2. Score with :class:`sps_workers.runtime.EngineInstance` (one per parallel task): decode ->
   validate -> score -> encode, dead letters with reasons, embedded or external serving, and the
   hop spans of sampled batches all come with it, identical to the baseline worker.
3. Engines that assign partitions themselves (no consumer-group membership) call
   :func:`sps_workers.runtime.mark_ready` once the pipeline reads the input topic and register with
   ``joins_consumer_group=False``; the runner then waits for that file instead of the group.
4. Engine-specific knobs (cluster address, operator parallelism, ...) come in
   ``WorkerSettings.engine_options``; reject unknown keys with a message naming them.
5. Register it below with the environment it runs in (``core`` or ``envs/<name>/requirements.txt``,
   built on demand by crayfish.host.envs) and pass the conformance suite in
   ``tests/test_engines.py``, which runs every registered engine unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineSpec:
    name: str
    module: str
    environment: str = "core"
    # Whether the engine honours WorkerSettings.consumer_group (the runner waits for assignment).
    joins_consumer_group: bool = True

    def wait_ready(self, settings, partitions: int, services: list, timeout_s: float = 180.0) -> None:
        """Ready = the worker's consumer group holds every partition (engines that join the group),
        or the engine wrote ``settings.ready_file`` (engines that assign partitions themselves:
        Flink, Spark, Bytewax). ``services``: the processes to watch meanwhile."""
        from crayfish.host.procs import ServiceError, wait_file
        from crayfish.kafka import wait_group_assigned

        if self.joins_consumer_group:
            try:
                wait_group_assigned(settings.bootstrap, settings.consumer_group, settings.parallelism, partitions,
                                    services, timeout_s=timeout_s)
            except TimeoutError as exc:
                raise ServiceError(str(exc)) from None
            return
        if not settings.ready_file:
            raise ServiceError(f"engine {self.name} does not join the consumer group and no ready_file is set")
        wait_file(Path(settings.ready_file), services, timeout_s=timeout_s, what=f"{self.name} worker")


ENGINES: dict[str, EngineSpec] = {
    "kafka": EngineSpec(name="kafka", module="sps_workers.kafka"),
    "flink": EngineSpec(name="flink", module="sps_workers.flink", environment="flink", joins_consumer_group=False),
    "spark": EngineSpec(name="spark", module="sps_workers.spark", environment="spark", joins_consumer_group=False),
    "ray": EngineSpec(name="ray", module="sps_workers.ray", environment="ray"),
    "kafka-streams": EngineSpec(name="kafka-streams", module="sps_workers.kafka_streams"),
    "faust": EngineSpec(name="faust", module="sps_workers.faust", environment="faust"),
    "bytewax": EngineSpec(name="bytewax", module="sps_workers.bytewax", environment="bytewax", joins_consumer_group=False),
}
