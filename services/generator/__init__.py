"""Data generator: open-loop / closed-loop workloads that feed batches into Kafka.

Schedules and synthetic data live in :mod:`services.generator.workloads` (pure,
seeded, no Kafka). This package initialiser deliberately imports nothing so that
importing a submodule stays cheap.
"""
