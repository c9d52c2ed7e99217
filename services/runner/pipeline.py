"""``engine: external``: measuring a pipeline that already runs, on topics the user named.

The runner starts no engine. It creates only its own probe topic (the clock-skew round trips),
never touches the pipeline's topics beyond producing the workload, and shows the pipeline is
alive before measuring: one probe batch on the input topic must produce a record on the output or
dead-letter topic within ``kafka.topics.ready_timeout_s``, else the point stops with one line.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from crayfish.codec import get_codec
from crayfish.kafka import RunTopics, admin_config, consumer_config, producer_config
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2


class PipelineNotReady(RuntimeError):
    """The external pipeline did not answer the probe batch (one line, naming the topics)."""


def pipeline_topics(topics_config, run_id: str) -> RunTopics:
    """The pipeline's topics, plus the run's own probe topic."""
    return RunTopics(topics_config.input, topics_config.output, topics_config.dead_letter,
                     f"crayfish-{run_id}-probe")


def partitions_of(bootstrap: str, topic: str) -> int:
    admin = AdminClient(admin_config(bootstrap))
    md = admin.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise PipelineNotReady(f"kafka.topics: topic {topic!r} does not exist on the cluster")
    return len(md.partitions)


def timestamp_types(bootstrap: str, topics: list[str]) -> dict[str, str]:
    """``message.timestamp.type`` of each topic: the paper's latency needs LogAppendTime on the
    input and output topics (with CreateTime the pipeline's own clock stamps its outputs)."""
    admin = AdminClient(admin_config(bootstrap))
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics])
    return {res.name: fut.result(timeout=10)["message.timestamp.type"].value for res, fut in futures.items()}


def _probe_batch(model: str, spec, run_id: str, named: bool) -> batch_pb2.DataBatch:
    now = time.time_ns()
    batch = batch_pb2.DataBatch(batch_id=f"{run_id}-probe", run_id=f"{run_id}-probe", sequence=0,
                                intended_ns=now, created_ns=now, model=model)
    feeds = spec.zeros(1)
    if isinstance(feeds, dict) or named:
        for name, array in (feeds if isinstance(feeds, dict) else {spec.inputs[0].name: feeds}).items():
            to_tensor(array, batch.inputs[name])
    else:
        to_tensor(feeds, batch.input)
    return batch


def wait_for_probe(bootstrap: str, topics: RunTopics, codec: str, model: str, spec, run_id: str,
                   timeout_s: float, named: bool = False) -> float:
    """Send one probe batch and wait for the pipeline's first record after it; the seconds it took."""
    c = Consumer(consumer_config(bootstrap, f"crayfish-probe-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    try:
        parts = []
        for t in (topics.output, topics.dead_letter):
            for p in c.list_topics(t, timeout=10).topics[t].partitions:
                high = c.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)[1]
                parts.append(TopicPartition(t, p, high))
        c.assign(parts)
        value, headers = get_codec(codec).encode_batch(_probe_batch(model, spec, run_id, named))
        producer = Producer(producer_config(bootstrap))
        producer.produce(topics.input, value, f"{run_id}-probe".encode(), headers=headers or None)
        if producer.flush(10) != 0:
            raise PipelineNotReady(f"the probe batch was not acknowledged by the broker at {bootstrap}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if any(not m.error() for m in c.consume(10, timeout=0.2)):
                return time.monotonic() - t0
    finally:
        c.close()
    raise PipelineNotReady(f"engine external: nothing on {topics.output} or {topics.dead_letter} within "
                           f"{timeout_s:.0f} s of a probe batch on {topics.input}: is the pipeline running "
                           "and reading that topic?")
