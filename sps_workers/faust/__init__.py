"""Faust engine: a faust-streaming app whose agent scores DataBatch records.

How it maps to Faust
--------------------
- **Source**: one Faust app per worker process, app id = ``WorkerSettings.consumer_group`` (Faust uses
  the app id as the Kafka consumer group, so all processes share one group and the runner waits for
  that group's assignment: ``joins_consumer_group=True``). The input topic is a Faust topic with
  ``key_serializer="raw"`` and ``value_serializer="raw"``: the agent sees the Kafka bytes untouched,
  so a malformed payload reaches the scoring operator and is dead-lettered with its reason.
- **Scoring**: the agent iterates ``stream.events()`` and hands every record to
  :class:`sps_workers.runtime.EngineInstance` (``event.message.value``, ``event.headers`` with the
  W3C ``traceparent``, ``event.message.timestamp`` — the broker's LogAppendTime, seconds → ms —, topic,
  partition, offset). The scoring call is blocking CPU work (or a blocking gRPC call for external
  serving) on the asyncio event loop: that is how a Faust agent runs synchronous code. Faust's Kafka
  consumer runs in a thread of its own, so heartbeats go on while the loop scores.
- **Sink**: the agent sends the ScoredBatch to the output topic, or the DeadLetter to the dead-letter
  topic, with the headers ``handle()`` returns, through the app's producer and awaits the delivery
  (``send_and_wait``, acks=all) before it acks the event. Automatic acks of the stream are off
  (``stream.enable_acks = False``): Faust would otherwise ack an event when its generator is closed,
  even when the agent was cancelled in the middle of a send. Faust commits the highest contiguous
  acked offset every ``commit_interval_s`` and on stop: at-least-once. A failed delivery is not
  acked; it stops the worker process (Faust's own shutdown, then exit status 1 naming the record).
- **Stop**: SIGTERM/SIGINT go to Faust's worker (mode's signal handlers): agents are cancelled
  between records, acked offsets committed, producer flushed, each EngineInstance closed (spans
  flushed). Records still buffered are not scored (``stream_wait_empty=False``) and not committed:
  the next owner reads them again, and a stop stays short even for a slow model.

Cluster client properties and start
-----------------------------------
``WorkerSettings.kafka_client`` (crayfish/kafka_client.py) is resolved in each worker process
(``${env:NAME}`` / ``${file:PATH}`` references, ``properties_file``) and becomes the app's
``broker_credentials``, used by its consumer and its producer (outputs and dead letters):
``faust.SASLCredentials`` for SASL_PLAINTEXT / SASL_SSL (``sasl.mechanisms`` PLAIN, SCRAM-SHA-256
or SCRAM-SHA-512, ``sasl.username`` / ``sasl.password``), ``faust.SSLCredentials`` for SSL; with
TLS an ``ssl.SSLContext`` trusting ``ssl.ca.location`` (system roots without it), presenting
``ssl.certificate.location`` + ``ssl.key.location`` (``ssl.key.password``) for mutual TLS, checking
the host name unless ``ssl.endpoint.identification.algorithm=none``. A property that cannot work
ends the worker at start with one line naming it (exit 2). Other librdkafka properties have no
Faust setting: they are ignored and named in one warning line at start. The app starts at its
group's committed offsets (else the topic's start): on a shared input topic the runner commits
this run's ``start_offsets`` for the group before starting the worker, so older records are not
scored; ``start_offsets`` itself is not read.

What Faust must not do here: the runner creates the topics, so ``topic_allow_declare=False`` and
``topic_disable_leader=True`` (no ``<app>-__assignor-__leader`` topic); there are no tables and so no
changelog topics; the web server is disabled (``web_enabled=False``) unless ``web_port`` asks for it,
and then it binds 127.0.0.1 only; Faust's data directory is a private temporary folder, removed on exit.

Knobs (``WorkerSettings.engine_options``; unknown keys are rejected naming them)
------------------------------------------------------------------------------
- ``concurrency`` (int, default 1): agent actors per worker process (Faust's ``concurrency=``). Each
  actor has its own EngineInstance (``worker_id`` ``faust-<process>.<actor>``). With more than one
  actor the scoring call runs in a thread (``asyncio.to_thread``) so that the actors overlap while
  onnxruntime / gRPC release the GIL; the order of outputs within a partition is then not kept.
  With 1 (the default, as in the paper) scoring runs inline on the loop, in input order.
- ``web_port`` (int or null, default null): run Faust's web server (stats, /metrics) on 127.0.0.1:port.
- ``commit_interval_s`` (float, default 1.0): how often Faust commits acked offsets.

Parallelism and scaling out
---------------------------
``parallelism`` (mp) = Faust worker processes of the same app, i.e. ``faust worker`` run mp times:
each process is a member of the consumer group and gets its share of the partitions (process i is
EngineInstance index i, ``facts.worker_id`` ``faust-<i>``). Processes, not agent concurrency, are
the truly parallel unit on CPU: one Faust worker is one asyncio loop in one interpreter, and a
blocking scoring call holds it. On a cluster, start the same module with the same settings on more
machines (or more processes per machine): Kafka's group protocol spreads the partitions over every
process of the group; mp cannot usefully exceed the input topic's partition count.

Run by hand: ``.envs/faust/bin/python -m sps_workers.faust --config @worker.json``.
"""
