"""Crayfish Mesh self-benchmarks: how much of a measurement is the harness, not the system under test.

Run ``python -m benchmarks --out DIR [--quick]`` (``make bench``). One local Kafka broker is started
for the whole run and handed to every part as ``kafka.bootstrap``. Results: ``DIR/bench.json``
(every number, the exact settings, host facts), ``DIR/bench.md`` (the short table, also printed),
and the raw files of each part under ``DIR/<part>/``. Numbers are *reported*, never asserted: each
goal below is shown as met / missed.

Parts and definitions
---------------------
1. **Worker efficiency** (``efficiency``; :mod:`benchmarks.efficiency`). Baseline worker
   (``python -m sps_workers.kafka``), embedded ONNX Runtime FFNN (1 intra-op / 1 inter-op thread),
   batch size 1, mp = 1, protobuf codec.

   * The input topic (1 partition) is pre-filled with ``N`` DataBatch records built like the
     generator builds them (same synthetic input, seed 42). The worker is started, and once its
     consumer group is Stable with the partition assigned, its CPU time is read; again when the
     output (+ dead-letter) topic holds ``N`` records (the worker has drained the input).
   * **worker CPU per batch** = (user + system CPU of the worker process, all threads including
     librdkafka's, after - before) / batches processed in between. Batches processed = ``N`` minus
     the output records already appended when the "before" reading was taken. Split into the
     **main thread** (Python: poll, decode, score, encode, produce calls) and **other threads**
     (librdkafka's I/O threads, ...) from ``psutil.Process.threads()``.
   * **drain rate** = batches processed / wall time between the two readings.
   * **bare ONNX Runtime call**: in the bench process, before the worker starts, an
     ``onnxruntime.InferenceSession`` with the worker's options (1 intra / 1 inter thread,
     sequential, all graph optimizations) runs the same ``[1, 1, 784]`` input: **latency** =
     median (and p99) of ``perf_counter`` around single ``session.run`` calls; **CPU per call** =
     ``time.process_time`` over a loop of calls / calls. For the breakdown the same is measured
     for the serving scorer's ``score`` and for the whole scoring operator (decode, score, encode
     of one record, no Kafka).
   * **ratio** = worker CPU per batch / bare ONNX Runtime CPU per call (goal <= 3x).
   * The same drain, in the same run, by every engine of ``efficiency_engines`` (default: the
     baseline and ``go``, the native worker: the ceiling the Python engines are judged against),
     each in its own consumer group over the same pre-filled input; ``engines.<name>``.
   * The **sustainable rate** of this configuration is the ONNX mp = 1 search of part 3.

2. **Harness headroom** (``harness``; :mod:`benchmarks.harness`).

   a. **Generator alone**: ``services.generator.generator.run`` with a constant workload at
      ``R_gen = 5 x`` the ONNX FFNN mp = 1 sustainable rate of part 3 (``--worker-rate`` when that
      is not available) into a fresh input topic (2 partitions, as in experiments) that nothing
      consumes. **achieved rate** = the generator's own report, ``(sent - 1) / span(created_ns)``;
      goal: ``achieved / target`` within 1 %. Lateness = ``created_ns - intended_ns`` p50 / p99.
      Tried with 1, 2, ... producer processes (the generator's ``processes`` setting) until one
      holds the rate (at most ``--max-gen-processes``); every attempt is reported and
      **processes needed** is the first that held.
   b. **Collector alone**: the output topic (2 partitions) is pre-filled with ``N`` ScoredBatch
      records (protobuf, shaped like the worker's) and ``sent.parquet`` lists their batch ids; then
      ``Collector(...).run()`` in this process, without clock probe or lag sampling.
      **rate** = ``N`` / wall time of ``run()`` (consumer start, every record decoded and matched,
      ``batches.parquet`` written); **consume rate** = the same without writing the files.
   Goal for both: >= 5x the worker's sustainable rate (the ONNX mp = 1 search).

3. **Parallelism** (``parallelism``; :mod:`benchmarks.parallelism`). Sustainable-throughput search
   (``services.runner.experiments.run_experiment`` with a ``search:`` section; engine kafka, model
   ffnn, batch size 1, constant workload, ``point_duration_s`` 8, precision 0.1; a point is
   sustainable when output >= 98 % of the rate, the consumer lag is not rising and the point is
   valid) for backend ``sleep`` (``delay_ms`` 10: ~100/s per instance) and backend ``onnxruntime``,
   each at mp = 1 and mp = 2. **scaling** = sustainable(mp 2) / sustainable(mp 1); goal >= 1.9 for
   ``sleep`` (the ONNX one is capped: 2 cores shared by broker, generator, collector, workers).
   Start rates: sleep 50/s (mp 1) and 100/s (mp 2); ONNX mp 1 a third of part 1's drain rate (500
   without it), ONNX mp 2 the mp 1 result. Each search brackets the capacity in
   ``[sustainable, lowest failed rate)``, so the scaling lies in ``[s2 / upper1, upper2 / s1]``
   (reported as its bracket). A search that errors (a crashed service) is retried once and the
   error is kept. Every experiment also measures its base point (closed loop, 1 outstanding, a few
   seconds): the unloaded latency of that configuration.

4. **Codec** (``codec``; :mod:`benchmarks.codec`). A ResNet50 input batch of 8 (float32
   ``[8, 224, 224, 3]``, uniform [0, 1), seed 42) in a ``crayfish.v1.DataBatch``; ``encode_batch``
   then ``decode_batch`` of ``crayfish.codec.get_codec(name)``; median over repetitions of each
   (protobuf raw tensor: 30 after 3 untimed; crayfish-json: 3 after 1 untimed). crayfish-json
   memoizes formatted tensors by content, so each of its rounds gets a batch of its own (the cost of
   encoding the same tensor again is reported beside it). **ratio** = median crayfish-json
   (encode + decode) / median protobuf (encode + decode); goal >= 1000x. The round trip is checked
   for equality and the payload sizes are reported.

8. **Tensor contract** (``contract``; :mod:`benchmarks.contract`). No broker. The FFNN (embedded
   ONNX Runtime, protobuf codec), bsz 1 and 64, sent as one tensor (``DataBatch.input``) and by
   name (``DataBatch.inputs``): per batch, the generator's build + serialization, the scoring
   operator's whole ``process`` and the collector's decode, in alternating rounds. **overhead** =
   (named - single) / single of the medians; goal <= 5 %.

Parts 5-7 (serving, tracing, Flink standalone) are described in their modules.

``--quick`` shrinks every part (tiny ``N``, 2-second search points, one tried rate per search,
relaxed point validity) to a smoke test of ~2 minutes; its numbers are not meaningful.
"""
