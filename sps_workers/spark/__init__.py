"""Spark Structured Streaming engine: Kafka -> micro-batches -> Python scoring on the executors -> Kafka.

Run as ``python -m sps_workers.spark --config <WorkerSettings JSON | @file>`` in the ``spark``
environment (``envs/spark/requirements.txt``: pyspark 4.2.0 and what our code imports). The
runner starts it like every engine; it registers with ``joins_consumer_group=False`` and writes
``WorkerSettings.ready_file`` itself.

How the pipeline maps onto Spark
--------------------------------
source
    ``spark.readStream.format("kafka")`` on the input topic, ``includeHeaders=true``,
    ``startingOffsets=earliest`` -- or, on a pre-created shared input topic, the run's start
    (``WorkerSettings.start_offsets``, partition -> offset, as Spark's JSON
    ``{"<topic>": {"0": 12, "1": 7}}``): the source keeps its offsets in the query's checkpoint
    and never reads the group's committed ones. Each micro-batch has one Spark task per Kafka partition with new
    records (``min_partitions`` splits them further). The source assigns partitions itself: no
    consumer-group membership (its generated group ids start with ``WorkerSettings.consumer_group``).
    Per record the task hands key, value, headers (the W3C ``traceparent`` among them), the
    broker's LogAppendTime (``unix_millis(timestamp)``), topic, partition and offset on. The
    tasks' consumers wait at most 5 ms per fetch (``kafka.fetch.max.wait.ms``; Kafka's default
    500 ms added ~0.6 s to every micro-batch here: closed-loop p50 ~1000 ms -> ~230 ms).
scoring
    ``DataFrame.mapInArrow`` (:mod:`sps_workers.spark.scoring`): the records of a task travel to a
    Python worker process as Arrow batches; there one :class:`sps_workers.runtime.EngineInstance`
    per worker process (cached in a module global; Spark reuses its Python workers across tasks
    and micro-batches) decodes, validates, scores (embedded ONNX Runtime, or a blocking call to an
    external server) and encodes, and dead-letters bad records with their reason. The task's
    partition id is the worker index: ``facts.worker_id`` = ``spark-<task partition id>``. Tasks of
    one micro-batch run in parallel on the executor cores (``local[mp]``: mp cores, mp Python
    workers). Sampled batches get the worker's hop spans; a task that recorded spans flushes them
    before it ends (Spark stops idle Python workers with a signal, no exit hooks run there).
sink
    ``writeStream.format("kafka")`` with a ``topic`` column per row (output or dead-letter topic),
    the input key, and a ``headers`` column (the trace context carried on). Producer: no linger,
    acks=all, idempotent. Trigger: processing time ``trigger_ms`` (0 = the next micro-batch starts
    as soon as the previous one has finished).
cluster client properties
    ``WorkerSettings.kafka_client`` (security: SASL, TLS, mutual TLS; any other client setting;
    secrets only as ``${env:..}`` / ``${file:..}`` references) is resolved on the driver into Java
    names (``KafkaClient.java()``) and set as ``kafka.<name>`` options of the source and the sink,
    over our defaults: Spark passes them to its consumers, producers and admin client, on the
    driver and the executors. Properties the connector sets itself or rejects (``group.id``,
    ``auto.offset.reset``, ``enable.auto.commit``, (de)serializers, interceptors) are left out with
    a warning naming them. Nothing prints the resolved values; a failure's traceback is printed
    with them replaced by ``[redacted]``.
delivery
    At-least-once: a micro-batch's input offsets are committed to the query's checkpoint (a temp
    dir per run) only after every task of the batch has written its output to Kafka.

Start-up and stop
-----------------
The Kafka connector is not part of pyspark: ``org.apache.spark:spark-sql-kafka-0-10_2.13`` at
exactly the installed pyspark version, with ``spark-token-provider-kafka-0-10``, ``kafka-clients``
and ``commons-pool2``, is fetched once with Maven (``sps_workers/spark/pom.xml``) into
``.cache/spark/<version>/`` and put on ``spark.jars`` (:mod:`sps_workers.spark.jars`).
pyspark 4.2.0 is pinned because it is the newest release whose connector Maven Central serves
(4.2.1 and 4.3.0 are on PyPI, their connector is not on Central).

Everything binds loopback: ``SPARK_LOCAL_IP=127.0.0.1``, ``spark.driver.host`` /
``spark.driver.bindAddress`` 127.0.0.1, no UI. The JVM is launched in a session of its own so the
runner's SIGTERM (sent to the worker's process group) reaches only the Python driver, which then
waits for the running micro-batch to finish (``stop_timeout_s``), stops the query and Spark, and
removes its scratch dir. Before the query starts, a warm-up job forks the Python workers and
builds their EngineInstances (``warmup``). Ready = the query is active and its first micro-batch
has been planned and run (``query.lastProgress``).

Knobs (``WorkerSettings.engine_options``; unknown keys are rejected)
--------------------------------------------------------------------
``master`` (``local[mp]``)
    Any Spark master URL: ``local[N]``, ``local[N,maxFailures]``, ``spark://host:port``, ``yarn``,
    ``k8s://...``.
``trigger_ms`` (0)
    Processing-time trigger interval; 0 = as fast as possible.
``max_offsets_per_trigger`` / ``min_partitions`` (None)
    The Kafka source's ``maxOffsetsPerTrigger`` / ``minPartitions``.
``arrow_batch_records`` (32)
    Records per Arrow batch into and out of the Python workers: smaller = the first results of a
    long micro-batch reach the sink sooner, larger = less overhead per record.
``async_progress`` (false)
    The Kafka sink's ``asyncProgressTrackingEnabled``: offsets are logged off the critical path
    (less latency per micro-batch, more records re-read after a crash).
``warmup`` (true), ``stop_timeout_s`` (15)
``checkpoint_dir`` (a fresh temp dir, removed at stop)
    Give one to keep the offsets across restarts of the worker.
``driver_host`` (127.0.0.1)
    The driver's bind and advertised address; a remote cluster's executors must reach it.
``conf`` ({})
    Any further Spark conf (``spark.*`` keys), e.g. ``spark.driver.memory``.

Scaling out on a Spark cluster
------------------------------
Give ``master`` (e.g. ``spark://master:7077``) and ``driver_host`` (an address the executors
reach), and make the executors able to run the scoring code: the same environment at the same
path (``spark.pyspark.python`` is this interpreter) with this repository importable (installed
into the environment, or shipped with ``conf: {"spark.submit.pyFiles": ...}``), and the model
files at ``models_dir``. Parallelism is then the executors' total cores; give the input topic at
least that many partitions (or set ``min_partitions``). The connector jars are shipped to the
executors through ``spark.jars``.
"""

ENGINE = "spark"
