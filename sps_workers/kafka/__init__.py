"""Baseline engine ``kafka``: a plain confluent-kafka consume -> score -> produce loop.

Parallelism mp = mp processes in one consumer group. At-least-once: an input offset is stored for
commit only after its output (or dead-letter) record is acknowledged by the broker.
"""
