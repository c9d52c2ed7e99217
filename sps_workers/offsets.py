"""At-least-once with a confluent-kafka consumer: what engines that drive one themselves share.

The baseline worker (sps_workers.kafka) and the Ray engine's input actors (sps_workers.ray) store
an input offset only once its output is delivered, and commit the stored offsets synchronously on
rebalance and at stop. Engines whose framework commits (Flink, Spark, Faust, Kafka Streams) or that
commit nothing (Bytewax) do not use this module.

confluent-kafka is imported at the top: only engines whose environment has it import this module.
"""

from __future__ import annotations

import collections

from confluent_kafka import KafkaError, KafkaException, TopicPartition

# A synchronous commit that fails with one of these lost nothing: there was nothing to commit, or
# the partitions are gone already (session lost under overload) and their next owner re-reads from
# the last commit (at-least-once).
COMMIT_ERRORS_TO_IGNORE = {
    KafkaError._NO_OFFSET, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
}


def commit_stored(consumer) -> bool:
    """Commit the consumer's stored offsets now; False when there was nothing to commit or the
    partitions are gone (:data:`COMMIT_ERRORS_TO_IGNORE`). Any other failure raises."""
    try:
        consumer.commit(asynchronous=False)
        return True
    except KafkaException as exc:
        if exc.args[0].code() not in COMMIT_ERRORS_TO_IGNORE:
            raise
        return False


class OffsetTracker:
    """Stores an input offset for commit only once it and every earlier offset of its partition
    have had their output delivered (outputs may be acknowledged out of input order)."""

    def __init__(self):
        self.pending: dict[int, collections.deque] = {}
        self.done: dict[int, set] = {}
        self.to_store: dict[int, int] = {}

    def started(self, partition: int, offset: int) -> None:
        q = self.pending.get(partition)
        if q is None:
            q = self.pending[partition] = collections.deque()
            self.done[partition] = set()
        q.append(offset)

    def delivered(self, partition: int, offset: int) -> None:
        q, done = self.pending[partition], self.done[partition]
        done.add(offset)
        while q and q[0] in done:
            done.discard(q[0])
            self.to_store[partition] = q.popleft() + 1

    def in_flight(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def drain(self, topic: str) -> list[TopicPartition]:
        if not self.to_store:
            return []
        out = [TopicPartition(topic, p, o) for p, o in self.to_store.items()]
        self.to_store.clear()
        return out

    def forget(self, partitions) -> None:
        for tp in partitions:
            self.pending.pop(tp.partition, None)
            self.done.pop(tp.partition, None)
            self.to_store.pop(tp.partition, None)
