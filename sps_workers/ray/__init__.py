"""Ray engine: chains of Ray core actors, input (Kafka consumer) -> scoring -> output (Kafka producer).

Run as ``python -m sps_workers.ray --config <WorkerSettings JSON | @file>`` in the ``ray``
environment (``envs/ray/requirements.txt``: ray 2.60, shared with the Ray Serve server of
serving/rayserve). Registered with ``joins_consumer_group=True``: the input actors are the
members of ``WorkerSettings.consumer_group``, so the runner waits for that group to hold every
partition, as it does for the baseline worker.

How the pipeline maps onto Ray (the paper's design, §3.4.4 / §4)
----------------------------------------------------------------
mp input actors, mp scoring actors and mp output actors, wired one-to-one
(input i -> scoring i -> output i; :mod:`sps_workers.ray.actors`):

source: ``InputActor``
    A confluent-kafka consumer in the worker's consumer group (partitions spread over the mp
    input actors by the group protocol). It polls up to ``max_poll_records`` records at a time and
    hands the batch (key, value, headers with the W3C ``traceparent``, LogAppendTime in ms,
    partition, offset) to its scoring actor, then passes the *reference* to the scored batch on to
    its output actor: the scored records move from the scoring actor to the output actor without
    coming back. Up to ``max_in_flight`` batches are in flight per chain (polling, scoring and
    producing overlap); actor calls run in the order they were made, so batches stay in order.
scoring: ``ScoringActor``
    One :class:`sps_workers.runtime.EngineInstance` (``index`` = the chain number, so
    ``facts.worker_id`` = ``ray-<i>``): decode, validate, score (embedded ONNX Runtime, or a
    blocking call to an external server), encode, dead letters with reasons, hop spans of sampled
    batches with the trace context carried on in the output headers.
sink: ``OutputActor``
    A confluent-kafka producer (no linger, acks=all, idempotent). Each call returns once every
    record of its batch is delivered (output or dead-letter topic).
delivery
    At-least-once: the input actor stores a batch's offsets for commit only after its output
    actor's call has returned (delivered), oldest batch first; on a rebalance it drains and
    commits before giving partitions up. A failed delivery or a dead actor ends the worker with
    an error (the uncommitted records are read again by whoever consumes the group next).

Start-up and stop
-----------------
By default a fresh local Ray on 127.0.0.1: ``ray.init(address="local", include_dashboard=False,
_node_ip_address="127.0.0.1")`` with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray then keeps
loopback as the node address, so its processes listen on 127.0.0.1 only), no usage stats, and a
fresh token in ``RAY_AUTH_TOKEN`` (Ray 2.60's token auth, never written to ~/.ray), session files
under ``.cache/ray``. Scoring and output actors are created and ready (model loaded, producer
connected) before the input actors start consuming. The ready file is written once the group
holds every input partition.

``python -m sps_workers.ray`` supervises the driver, which runs in a session of its own (the
runner's SIGTERM to the worker's process group would otherwise kill Ray's processes before the
drain). On SIGTERM the driver stops the input actors' polling, waits for their batches in flight
to be delivered and commits their offsets, closes the scoring actors' EngineInstances (spans
flushed) and the producers, then shuts Ray down -- within ``stop_timeout_s``.

Knobs (``WorkerSettings.engine_options``; unknown keys are rejected)
--------------------------------------------------------------------
``address`` (null: a fresh local Ray)
    ``ray://host:port`` (Ray Client, the driver may run anywhere), ``host:port`` (the GCS of a
    cluster this machine is a node of) or ``auto``.
``max_in_flight`` (4)
    Poll batches in flight per chain; 1 = poll, score, produce strictly one after the other.
``scoring_cpus`` (1.0)
    Logical CPUs each scoring actor reserves (input and output actors reserve none).
``num_cpus`` (max(cpu count, mp x scoring_cpus)), ``object_store_mb`` (256), ``temp_dir``
(``.cache/ray``)
    The local Ray only.
``stop_timeout_s`` (15)
``runtime_env`` ({})
    Ray's runtime_env for the job (``py_modules``, ``working_dir``, ``env_vars``, ...).

Scaling out on a Ray cluster
----------------------------
Give ``address`` (``ray://head:10001``); for a cluster with token authentication put its token
in the worker's environment (``RAY_AUTH_TOKEN``; ``RAY_AUTH_MODE=token`` is then implied). A
cluster whose head listens on loopback only (a single-machine test cluster) also needs
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for ``host:port`` addresses. The actors are scheduled by Ray over the cluster's
nodes: each needs this repository importable (install it into the nodes' environment, or ship it
with ``runtime_env: {"py_modules": [...]}``), the packages of ``envs/ray/requirements.txt``,
the model files at ``models_dir`` (embedded serving) and the Kafka brokers reachable. ``OTEL_*``
and ``CRAYFISH_*`` variables of the driver are passed on to the actors. Parallelism is mp chains;
give the input topic at least mp partitions (the runner does), and ``scoring_cpus`` so Ray
spreads scoring actors over nodes by their CPUs.
"""

ENGINE = "ray"
