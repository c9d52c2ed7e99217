"""Engine ``flink``: the scoring pipeline as an Apache Flink job, written with PyFlink (apache-flink 2.2).

How the job maps to Flink
-------------------------
::

    Kafka table source ──to_data_stream──▶ ScoringFunction (ProcessFunction) ──from_data_stream──▶ Kafka table sink
    (flink-sql-connector-kafka 5.0.0-2.2)   one EngineInstance per subtask      topic per row: output | dead letter

- **Source.** PyFlink's DataStream ``KafkaSource`` only takes value-only deserializers, so it
  cannot see record headers (the W3C ``traceparent``), the LogAppendTime stamp, partition or
  offset. The connector's table source is the same ``KafkaSource`` with a metadata-aware schema:
  ``crayfish_input(k BYTES, v BYTES, hdrs MAP<STRING,BYTES> METADATA FROM 'headers',
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', p INT, o BIGINT)`` in ``raw`` format, converted
  to a DataStream of Rows. Consumer group = WorkerSettings.consumer_group, start from the group's
  committed offsets, ``earliest`` when it has none (on a pre-created shared input topic the runner
  commits the run's ``start_offsets`` for the group before the worker starts, so nothing older is
  read).
- **Cluster client properties.** ``WorkerSettings.kafka_client`` (security: SASL, TLS, mutual TLS;
  any other client setting; secrets only as ``${env:..}`` / ``${file:..}`` references) is resolved
  by the driver (:mod:`.job`) into Java names (``KafkaClient.java()``; the JAAS login module renamed
  to the connector's relocated ``org.apache.flink.kafka.shaded.org.apache.kafka...`` class) and
  given to the source and the sink as ``'properties.<name>'`` options (over our defaults; quoted
  for Flink SQL), and to the driver's own committed-lag client. The DDL is never printed; what the
  driver prints has the secret values replaced by ``[redacted]``.
- **Scoring.** :class:`sps_workers.flink.functions.ScoringFunction` builds
  ``EngineInstance(settings, engine="flink", index=<subtask index>)`` in ``open()`` (in that
  subtask's own Python worker process; PyFlink opens it when the first records arrive) and calls
  ``handle(value, headers, append_ms, topic, partition, offset)`` per record: decode, validate,
  score (embedded ONNX Runtime or the external server), encode, dead letters with reasons, hop
  spans of sampled batches. ``close()`` closes it (spans flushed).
- **Sink.** A Kafka table sink whose rows name their topic (``topic`` metadata; output or
  dead-letter topic) and carry headers (trace context of the output, codec headers) and the input
  key. ``sink.delivery-guarantee = at-least-once``.
- **Delivery.** Checkpoints every ``checkpoint_interval_ms`` (AT_LEAST_ONCE mode): on each one the
  Python operator finishes its bundle, the Kafka writer flushes every record in flight, and only
  when the checkpoint completes does the source commit its offsets to the consumer group. Records
  are sent as they come (``sink_linger_ms`` 0); the checkpoint only bounds what a crash re-reads. (The source
  runs a commit between two polls of its consumer, and an idle poll lasts 10 s: on an idle topic
  the group's committed offsets trail by up to ~10 s. Flink itself recovers from checkpoint state.)
- **Stop.** ``python -m sps_workers.flink`` is a supervisor; the driver (:mod:`.job`) runs in its own
  session so the runner's process-group SIGTERM does not hit the JVM and the Python workers. On
  SIGTERM the driver waits (at most 11 s) until the group's committed offsets reach the input
  topic's end, then stops the job with a savepoint (sources stop, Python functions close and flush
  their spans, the sink flushes), falls back to cancel after ``stop_timeout_s``, and exits; the
  supervisor kills whatever is left of the driver's session after 20 s.
- **Readiness.** The driver writes the ready file (``mark_ready``) once the job is RUNNING and
  every task is RUNNING (REST ``/jobs/<id>``: the sources read, the Python workers are connected).
  Registered with ``joins_consumer_group=False``: the Kafka source assigns partitions itself.
- **protobuf.** apache-flink 2.2 pins apache-beam 2.61, hence protobuf < 6: :mod:`.protocompat`
  loads crayfish.v1 stubs generated for that runtime (cached) instead of the committed 6.31 ones.

Parallelism and knobs (``WorkerSettings.engine_options``)
--------------------------------------------------------
- default: every operator at ``parallelism`` (mp), chained into one task per slot — the paper's
  [N-N-N]; each scoring subtask is its own Python process.
- ``operator_parallelism: [source, scoring, sink]``: chaining disabled, each operator at its own
  parallelism (the paper's [32-N-32]); the scoring entry must equal ``parallelism``.
- ``jobmanager: "host:port"``: submit to a running Flink cluster's REST endpoint instead of the
  local mini-cluster (default).
- ``checkpoint_interval_ms`` (1000), ``bundle_size`` (1000) and ``bundle_time_ms`` (5): PyFlink hands
  records to the Python worker in bundles; the time bound is what a record may wait at low rates
  (Flink's defaults, 100000 / 1000 ms, would add up to a second of latency).
- ``buffer_timeout_ms`` (5): how long a record may wait in a network buffer between operators that
  are not chained (``operator_parallelism``); Flink's default 100 ms added ~200 ms per record to a
  [1-2-1] job (two exchanges) at low rates.
- ``sink_linger_ms`` (0): linger.ms of the sink's producer (0 = the baseline worker's setting).
- ``stop_timeout_s`` (5): how long stop-with-savepoint may take before the job is cancelled.
- ``config: {key: value}``: any other Flink configuration key, applied last.

Scaling out on a Flink cluster
------------------------------
Start a standalone Flink 2.2 session cluster (JobManager + TaskManagers with enough slots for the
largest operator parallelism; ``flink-python-2.2.x.jar`` from ``opt/`` must be in the cluster's
``lib/``), then give ``engine_options.jobmanager`` = its REST address. The driver builds Flink's
RemoteStreamEnvironment: the job graph, the connector jar and the pickled Python functions go to
the cluster; each TaskManager host needs this repository and the ``flink`` environment at the same
paths (``python.executable`` points at it) and reach to Kafka and, for external serving, to the
model server. Parallelism beyond one machine is then ``parallelism`` / ``operator_parallelism``;
Kafka partitions bound the useful source parallelism. To try it on one machine,
``.envs/flink/bin/python -m sps_workers.flink.cluster --slots 2`` starts a session cluster from the
wheel's own ``bin/jobmanager.sh`` / ``taskmanager.sh`` (everything on 127.0.0.1, flink-python on
its class path) and prints its REST address; tests/integration/sps_workers/test_flink.py runs a job on one.

Limits (measured on the 2-core development host)
-------------------------------------------------
- PyFlink's process mode talks to each Python worker over Beam gRPC servers in the JVM (control,
  data, state, logging, provisioning). Beam's ServerFactory builds them with
  ``NettyServerBuilder.forPort``, i.e. on every interface, whatever Flink's bind-host settings
  say. :mod:`.loopback` replaces that one class (compiled on first use against the installed
  flink-python, put before it on the class path of the local gateway and of
  :mod:`.cluster`), so they bind 127.0.0.1 like everything else; on a cluster of your own put
  ``.cache/flink/loopback/<key>/crayfish-beam-loopback.jar`` into ``lib/`` for the same effect.
  PyFlink's ``thread`` mode (no gRPC) is not offered: its embedded interpreter does not see the virtualenv
  (``No module named 'pemja'``) and one interpreter per JVM would serialise the subtasks on the GIL.
- Latency: a record waits for its bundle and crosses two gRPC hops; at a low rate the median
  end-to-end latency of the FFNN was ~15 ms (input append -> Python ~8 ms, scoring 0.2 ms, Python
  -> output append ~5.5 ms). The first records of each subtask also wait for open() (model load).
- Throughput with Kafka vs without (``benchmarks/flink_standalone.py``): the JVM side of PyFlink
  (Beam coders, table conversions, Kafka clients) costs about twice the Python worker's CPU per
  record; where cores are scarce that, and the broker, come out of the scoring's share.

Standalone baseline (no Kafka): ``python -m sps_workers.flink.standalone --config ... --count N``
(see :mod:`.standalone`); the Kafka-in-loop vs standalone comparison is
``benchmarks/flink_standalone.py``.
"""
