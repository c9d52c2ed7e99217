"""Topics that already exist: ``engine: external`` (a pipeline that already runs, on topics the user
named) and pre-created topics any engine uses as they are.

For ``engine: external`` the runner starts no engine. It creates only its own probe topic (the clock-skew round trips),
never touches the pipeline's topics beyond producing the workload, and shows the pipeline is
alive before measuring: one probe batch on the input topic must produce a record on the output or
dead-letter topic within ``kafka.topics.ready_timeout_s``, else the point stops with one line.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource

from crayfish.codec import get_codec
from crayfish.kafka import (
    RunTopics,
    admin_config,
    consumer_config,
    high_watermark,
    producer_config,
)
from crayfish.kafka_client import KafkaClient
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2


class PipelineNotReady(RuntimeError):
    """The external pipeline did not answer the probe batch (one line, naming the topics)."""


def pipeline_topics(topics_config, run_id: str) -> RunTopics:
    """The given topics, plus the probe topic: the given one, or the run's own."""
    return RunTopics(topics_config.input, topics_config.output, topics_config.dead_letter,
                     topics_config.probe or f"crayfish-{run_id}-probe")


def partitions_of(bootstrap: str, topic: str, client: KafkaClient | None = None) -> int:
    admin = AdminClient(admin_config(bootstrap, client))
    md = admin.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise PipelineNotReady(f"kafka.topics: topic {topic!r} does not exist on the cluster")
    return len(md.partitions)


def check_precreated(bootstrap: str, topics: RunTopics, stamped: list[str], client: KafkaClient | None = None) -> None:
    """Pre-created topics used as they are: each must exist, and each of ``stamped`` must be stamped
    by the broker (LogAppendTime), else one line saying what is wrong."""
    names = [topics.input, topics.output, topics.dead_letter, *stamped]
    for name in dict.fromkeys(names):
        partitions_of(bootstrap, name, client)
    try:
        kinds = timestamp_types(bootstrap, list(dict.fromkeys(stamped)), client)
    except KafkaException as exc:
        raise PipelineNotReady(f"kafka.topics: cannot read the configs of {', '.join(dict.fromkeys(stamped))} to check "
                               f"that the broker stamps them ({exc.args[0].str() if exc.args else exc}): the "
                               "user needs DescribeConfigs on them") from None
    for name, kind in kinds.items():
        if kind != "LogAppendTime":
            raise PipelineNotReady(f"kafka.topics: topic {name!r} has message.timestamp.type={kind}; the latency is "
                                   "measured on the broker's stamps, so it needs LogAppendTime (kafka-configs --alter "
                                   "--entity-type topics --entity-name ... --add-config message.timestamp.type=LogAppendTime)")


def start_at_end(bootstrap: str, topic: str, group: str, client: KafkaClient | None = None) -> dict[int, int]:
    """A run's own start on a shared input topic: the topic's end offsets now, committed for the
    run's fresh consumer group (engines that resume from the group start there; the others are
    handed the offsets) -> partition -> offset."""
    c = Consumer(consumer_config(bootstrap, group, client, **{"enable.auto.commit": False}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = {p: high_watermark(c, topic, p) for p in parts}
    finally:
        c.close()
    admin = AdminClient(admin_config(bootstrap, client))
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
    try:
        admin.alter_consumer_group_offsets([request], request_timeout=10)[group].result(timeout=15)
    except KafkaException as exc:
        raise PipelineNotReady(f"kafka.topics: cannot set the start of consumer group {group} on {topic} "
                               f"({exc.args[0].str() if exc.args else exc})") from None
    return offsets


def timestamp_types(bootstrap: str, topics: list[str], client: KafkaClient | None = None) -> dict[str, str]:
    """``message.timestamp.type`` of each topic: the paper's latency needs LogAppendTime on the
    input and output topics (with CreateTime the pipeline's own clock stamps its outputs)."""
    admin = AdminClient(admin_config(bootstrap, client))
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
                   timeout_s: float, named: bool = False, client: KafkaClient | None = None) -> float:
    """Send one probe batch and wait for the pipeline's first record after it; the seconds it took."""
    c = Consumer(consumer_config(bootstrap, f"crayfish-probe-{uuid.uuid4().hex[:6]}", client,
                                 **{"enable.auto.commit": False}))
    try:
        parts = []
        for t in (topics.output, topics.dead_letter):
            for p in c.list_topics(t, timeout=10).topics[t].partitions:
                high = c.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)[1]
                parts.append(TopicPartition(t, p, high))
        c.assign(parts)
        value, headers = get_codec(codec).encode_batch(_probe_batch(model, spec, run_id, named))
        producer = Producer(producer_config(bootstrap, client))
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
