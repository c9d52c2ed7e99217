"""Create the topics a worker config names, if missing (the compose stack's kafka-worker runs
this before it starts; the runner does the same per run with crayfish.kafka.create_topics).

    python compose/topics.py /etc/crayfish/kafka-worker.json [--partitions 2]

Input and output get ``--partitions`` partitions, the dead-letter topic one; all use
LogAppendTime (the broker stamps both ends of the worker hop) and the project's message size
limit. Topics that exist already are left as they are. Exit status 0 when every topic exists.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from crayfish.kafka import MAX_MESSAGE_BYTES, admin_config


def topic_specs(worker_config: dict, partitions: int) -> dict[str, int]:
    """``{topic: partitions}`` for the input, output and dead-letter topics of a worker config."""
    return {worker_config["input_topic"]: partitions,
            worker_config["output_topic"]: partitions,
            worker_config["dead_letter_topic"]: 1}


def ensure_topics(bootstrap: str, specs: dict[str, int], timeout_s: float = 60.0) -> list[str]:
    """Create the missing topics of ``specs``; return the names created."""
    admin = AdminClient(admin_config(bootstrap))
    config = {"message.timestamp.type": "LogAppendTime", "max.message.bytes": str(MAX_MESSAGE_BYTES)}
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [NewTopic(t, num_partitions=n, replication_factor=1, config=config)
               for t, n in specs.items() if t not in existing]
    created = []
    for name, fut in (admin.create_topics(missing, request_timeout=timeout_s).items() if missing else []):
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another instance raced us: fine
                raise
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5).topics
        if all(t in md and not md[t].error and md[t].partitions
               and all(p.leader >= 0 for p in md[t].partitions.values()) for t in specs):
            return created
        time.sleep(0.2)
    raise RuntimeError(f"topics not ready after {timeout_s:.0f}s: {sorted(specs)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python compose/topics.py", description=__doc__.split("\n")[0])
    ap.add_argument("worker_config", type=Path, help="the worker's JSON config (bootstrap and topic names)")
    ap.add_argument("--partitions", type=int, default=2, help="partitions of the input and output topics")
    args = ap.parse_args(argv)
    cfg = json.loads(args.worker_config.read_text())
    created = ensure_topics(cfg["bootstrap"], topic_specs(cfg, args.partitions))
    print(f"topics: created {created or 'none'}; all of {sorted(topic_specs(cfg, args.partitions))} ready",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
