"""Stream-processing workers: one folder per engine, all speaking the crayfish.v1 contract.

Every engine does the same job: read DataBatch records from the input topic, score them with the
configured backend, write ScoredBatch records to the output topic and DeadLetter records (with a
reason) to the dead-letter topic; commit input offsets only after the output is delivered.

What the engines share lives beside their folders, and an engine imports no other engine:
:mod:`.settings` (the WorkerSettings document every worker reads), :mod:`.runtime` (the scoring
assembly: :class:`~sps_workers.runtime.EngineInstance`, the command line, readiness, processes),
:mod:`.options` (the base of every engine's options class, its one error type), :mod:`.scoring_op`
and :mod:`.external` (decode -> validate -> score -> encode, calls to model servers) and
:mod:`.offsets` (committing a confluent-kafka consumer's offsets at-least-once).

How to add an engine (tests/integration/sps_workers/test_extension_engines.py does exactly these steps with a throwaway
engine in a temporary package)
-------------------------------------------------------------------------------------------------
1. Create ``sps_workers/<engine>/`` with ``options.py``: one subclass of
   :class:`sps_workers.options.EngineOptions` (``ENGINE = "<engine>"``; one field with a default
   and a description per knob, cross-field rules in ``check``; no fields if it has no knobs) -- no
   import of the engine's own library there.
2. Write its ``__main__``: ``settings, options = read_settings(argv, prog, description, <Options>)``
   (:func:`sps_workers.runtime.read_settings`: ``--config <WorkerSettings JSON | @file>``, a bad
   option ends the process with exit code 2 and one line), then run until SIGTERM and stop cleanly
   (flush outputs, commit offsets, close the instances: spans end). A non-Python engine (e.g. Kafka
   Streams in Java) keeps a thin Python ``__main__`` that validates the same way, builds it if
   needed and execs it with the same config.
3. Score with :class:`sps_workers.runtime.EngineInstance` (one per parallel task, built in that
   task's process): ``handle(value, headers, append_ms, topic, partition, offset)`` returns the
   record to produce (output or dead-letter topic). Decode -> validate -> score -> encode, dead
   letters with reasons, embedded or external serving and the hop spans of sampled batches all come
   with it, identical to the baseline worker.
4. Readiness: engines whose consumers join ``WorkerSettings.consumer_group`` need nothing more;
   engines that assign partitions themselves call :func:`sps_workers.runtime.mark_ready` once the
   pipeline reads the input topic and register with ``joins_consumer_group=False``.
5. Register it with one line in :data:`ENGINES` below: name, module, options class, the environment
   it runs in (``core``, or ``envs/<name>/requirements.txt``, built on demand by
   crayfish.host.envs) and how it becomes ready. The experiment files accept the name from then on
   (``engine: <engine>``, its ``engine_options`` checked against the class by ``crayfish validate``).
6. Pass the conformance suite: ``tests/integration/sps_workers/test_engines.py`` runs every registered engine through the
   checks of ``services/conformance`` unchanged (``crayfish conformance --engine <engine>`` prints
   them as a table); add a row to docs/engines.md. An engine whose options have no usable
   defaults names the options the suite runs it with (``CONFORMANCE_OPTIONS``).

A pipeline in another language needs none of this: ``engine: command`` starts any program as the
engine, ``engine: external`` measures one that already runs (docs/adapters.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crayfish.host.procs import ServiceError, wait_file
from sps_workers.bytewax.options import BytewaxOptions
from sps_workers.command.options import CommandOptions
from sps_workers.faust.options import FaustOptions
from sps_workers.flink.options import FlinkOptions
from sps_workers.go.options import GoOptions
from sps_workers.kafka.options import KafkaOptions
from sps_workers.kafka_streams.options import KafkaStreamsOptions
from sps_workers.options import EngineOptions
from sps_workers.ray.options import RayOptions
from sps_workers.spark.options import SparkOptions


@dataclass(frozen=True)
class EngineSpec:
    """One engine: how the runner starts it, checks its options and knows it is ready."""

    name: str                                  # ``engine:`` in experiment files
    module: str                                # ``python -m <module> --config <WorkerSettings>``
    options: type[EngineOptions] = EngineOptions  # its engine_options (the base class: none)
    environment: str = "core"                  # crayfish.host.envs environment it runs in
    # Whether the engine honours WorkerSettings.consumer_group (the runner waits for assignment).
    joins_consumer_group: bool = True

    def check_options(self, raw: dict | None, parallelism: int = 1) -> EngineOptions:
        """``engine_options`` validated for a worker of ``parallelism`` instances;
        :class:`sps_workers.options.EngineOptionsError` (one line naming the option) otherwise."""
        return self.options.parse(raw, parallelism, engine=self.name)

    def wait_ready(self, settings, partitions: int, services: list, timeout_s: float = 180.0) -> None:
        """Ready = the worker's consumer group holds every partition (engines that join the group),
        or the engine wrote ``settings.ready_file`` (engines that assign partitions themselves:
        Flink, Spark, Bytewax); an engine's options may decide instead (``engine: command``, its
        ``ready``). ``services``: the processes to watch meanwhile."""
        chosen = self.check_options(settings.engine_options, settings.parallelism).readiness()
        if chosen == "group" or (chosen is None and self.joins_consumer_group):
            # Inside: confluent-kafka is not in every engine's environment (faust has aiokafka), and
            # every engine's process imports this package.
            from crayfish.kafka import wait_group_assigned

            try:
                wait_group_assigned(settings.bootstrap, settings.consumer_group, settings.parallelism, partitions,
                                    services, timeout_s=timeout_s, client=settings.kafka_client)
            except TimeoutError as exc:
                raise ServiceError(str(exc)) from None
            return
        if not settings.ready_file:
            raise ServiceError(f"engine {self.name} does not join the consumer group and no ready_file is set")
        wait_file(Path(settings.ready_file), services, timeout_s=timeout_s, what=f"{self.name} worker")


# The engine registry: one line per engine.
ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in (
    EngineSpec("kafka", "sps_workers.kafka", KafkaOptions),
    EngineSpec("flink", "sps_workers.flink", FlinkOptions, environment="flink", joins_consumer_group=False),
    EngineSpec("spark", "sps_workers.spark", SparkOptions, environment="spark", joins_consumer_group=False),
    EngineSpec("ray", "sps_workers.ray", RayOptions, environment="ray"),
    EngineSpec("kafka-streams", "sps_workers.kafka_streams", KafkaStreamsOptions),
    EngineSpec("go", "sps_workers.go", GoOptions),
    EngineSpec("faust", "sps_workers.faust", FaustOptions, environment="faust"),
    EngineSpec("bytewax", "sps_workers.bytewax", BytewaxOptions, environment="bytewax", joins_consumer_group=False),
    EngineSpec("command", "sps_workers.command", CommandOptions),
)}
