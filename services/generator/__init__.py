"""Data generator: open-loop / closed-loop workloads that feed batches into Kafka.

The service is :mod:`services.generator.generator` (``python -m services.generator``). What it
sends is pure, seeded and Kafka-free: the workload configs (:mod:`services.generator.workload_configs`),
their schedules (:mod:`services.generator.schedules`, arrival processes in
:mod:`services.generator.arrivals`) and the payloads (:mod:`crayfish.payloads`);
:mod:`services.generator.workloads` re-exports them in one import. This package initialiser
deliberately imports nothing so that importing a submodule stays cheap.
"""
