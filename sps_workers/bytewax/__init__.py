"""Bytewax engine: a bytewax 0.21 dataflow ``input → map(score) → output`` over Kafka.

How it maps to Bytewax
----------------------
- **Source** (step ``kafka-in``): the Kafka partitions of the input topic, read by the partitions of
  ``bytewax.connectors.kafka.KafkaSource`` (``starting_offset=OFFSET_BEGINNING``: a fresh topic's
  start; on a shared input topic ``WorkerSettings.start_offsets``, this run's start, given to each
  partition as its resume state, so the consumer is assigned at that offset before the first
  read and the ready file follows it: no older record is scored; tail mode,
  ``batch_size = max_poll_records``), which hand out ``KafkaSourceMessage`` items with key, value,
  headers and the (type, ms) timestamp. ``KafkaSource`` itself is a ``FixedPartitionedSource``:
  Bytewax places its partitions on workers by hashing the partition names, so two Kafka partitions
  may both land on one of two workers and the other idles. :class:`dataflow.WorkerKafkaSource` wraps
  it as a ``DynamicSource`` instead: worker ``w`` of ``n`` builds the KafkaSource partitions
  ``p`` with ``p % n == w`` (round-robin, as a Kafka group assignor would), learns its own worker
  index from Bytewax (``build(step_id, worker_index, worker_count)``), builds that worker's
  EngineInstance up front (model loaded before the first record), and writes the runner's ready file
  after its first read from Kafka. Bytewax assigns partitions itself, so it does not join the
  consumer group (``joins_consumer_group=False``); the timely cluster connects every process before
  any worker runs, so a first read means the whole dataflow runs.
- **Scoring** (step ``score``, ``op.filter_map``): ``EngineInstance.handle`` of the worker that read
  the record (stateless steps run where their input is; no exchange between workers), with the
  record's headers (W3C ``traceparent``) and its LogAppendTime stamp. It returns a
  ``KafkaSinkMessage`` whose ``topic`` is the output or the dead-letter topic, with the headers
  ``handle()`` returned. (A map that drops what is still queued once a stop was asked for, so that a
  stop takes one scoring call, not a whole source batch of them.)
- **Sink** (step ``kafka-out``): ``bytewax.connectors.kafka.KafkaSink(topic=None)``, one producer per
  worker (the project's low-latency producer settings: acks=all, idempotent, no linger); each batch is
  flushed before the step returns. A failed delivery raises from the flush and stops the dataflow
  (the process exits non-zero).
- **Stop**: SIGTERM/SIGINT set a flag; every source partition then ends (EOF), the dataflow completes,
  the sinks flush and close, the EngineInstances close (spans flushed), exit 0. (Raising
  KeyboardInterrupt instead, Bytewax's Ctrl-C path, panics inside whichever step runs.) With mp
  processes the parent forwards the signal to each.

Cluster client properties
-------------------------
``WorkerSettings.kafka_client`` (crayfish/kafka_client.py), resolved in each process
(``${env:NAME}`` / ``${file:PATH}`` references, ``properties_file``), goes unchanged (librdkafka
names) into every client of the dataflow: the KafkaSource consumers and the KafkaSink producers
(``add_config``) and the admin client that lists the input's partitions. A property that cannot
work ends the worker at start with one line naming it (exit 2).

Delivery guarantee
------------------
Bytewax keeps input positions in its recovery snapshots, never in Kafka, and recovery is off here
(it is off by default; and a ``DynamicSource`` keeps no resume state). Nothing is committed, so a
restarted worker reads the input topic from its start again (a shared topic: from this run's start
offsets): **at-least-once** — nothing is lost, and after a restart everything already scored is
scored (and emitted) again. Within one run every record is scored once. Timely's epochs (``epoch_interval_s``) only pace progress tracking here.

Knobs (``WorkerSettings.engine_options``; unknown keys are rejected naming them)
------------------------------------------------------------------------------
- ``workers_per_process`` (int, default 1): Bytewax worker threads per process (``-w``). Must divide
  ``parallelism``; the process count is ``parallelism / workers_per_process`` (``-i``/``-a``).
- ``epoch_interval_s`` (float, default 10): Bytewax's epoch length.

Parallelism and scaling out
---------------------------
``parallelism`` (mp) = Bytewax workers. By default every worker is its own process (``-w 1``,
``parallelism`` processes, connected as one timely cluster over TCP on 127.0.0.1, ports picked
free): processes are what runs Python truly in parallel; worker threads of one process share the GIL
(onnxruntime and gRPC waits release it, decode/encode do not). ``facts.worker_id`` is
``bytewax-<worker index>``, Bytewax's own (global) worker index. mp cannot usefully exceed the input
topic's partition count. On a real cluster run the same dataflow with Bytewax's runner, one process
per machine::

    python -m bytewax.run "sps_workers.bytewax.dataflow:from_config('worker.json')" \\
        -w 2 -i <process id> -a "host1:2101;host2:2101"

Run by hand: ``.envs/bytewax/bin/python -m sps_workers.bytewax --config @worker.json``.
"""
