package crayfish.streams;

import com.google.protobuf.InvalidProtocolBufferException;
import crayfish.v1.Batch.DataBatch;
import crayfish.v1.Batch.DeadLetter;
import crayfish.v1.Batch.ScoredBatch;
import crayfish.v1.Batch.ScoringFacts;
import crayfish.v1.TensorOuterClass.DType;
import crayfish.v1.TensorOuterClass.Tensor;
import com.google.protobuf.ByteString;
import java.time.Instant;
import java.util.Arrays;

/**
 * sps_workers/scoring_op.py for the JVM: decode -> validate -> score -> encode, with the same
 * ScoringFacts stamps, the same dead-letter reasons and the same detail strings. One per worker
 * instance (stream thread); not thread-safe.
 */
final class Operator {
    static final String DECODE_ERROR = "decode_error";
    static final String BAD_SHAPE = "bad_shape";
    static final String BAD_DTYPE = "bad_dtype";
    static final String UNKNOWN_MODEL = "unknown_model";
    static final String SCORING_ERROR = "scoring_error";
    private static final int DETAIL_MAX = 2000;

    /** (batch_id, received_ns, decode_ns, inference_ns, encode_ns, send_ns) of a scored batch. */
    record Timing(String batchId, long receivedNs, long decodeNs, long inferenceNs, long encodeNs, long sendNs) {
    }

    /** Either {@code value} (output topic) or {@code deadLetter} (dead-letter topic, with reason). */
    record Result(byte[] value, byte[] deadLetter, String reason, Timing timing) {
    }

    private final ModelSpec spec;
    private final String workerId;
    private final String backend;
    private final Scorer scorer;
    private final ScoringClient client;
    private final int retries;
    private final double backoffS;

    Operator(ModelSpec spec, String workerId, Scorer scorer) {
        this(spec, workerId, scorer, null, scorer.name(), 0, 0);
    }

    Operator(ModelSpec spec, String workerId, ScoringClient client, int retries, double backoffS) {
        this(spec, workerId, null, client, ScoringClient.KIND, retries, backoffS);
    }

    private Operator(ModelSpec spec, String workerId, Scorer scorer, ScoringClient client, String backend,
                     int retries, double backoffS) {
        this.spec = spec;
        this.workerId = workerId;
        this.scorer = scorer;
        this.client = client;
        this.backend = backend;
        this.retries = retries;
        this.backoffS = backoffS;
    }

    static long wallNs() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000_000L + now.getNano();
    }

    Result process(byte[] value, long inputAppendMs, String topic, int partition, long offset) {
        long received = wallNs();
        long t0 = System.nanoTime();
        DataBatch batch;
        long[] shape;
        try {
            batch = DataBatch.parseFrom(value == null ? new byte[0] : value);
        } catch (InvalidProtocolBufferException e) {
            return dead(DECODE_ERROR, "not a crayfish.v1.DataBatch: " + e.getMessage(), value, null, topic, partition,
                    offset, inputAppendMs, received);
        }
        try {
            shape = Tensors.check(batch.getInput());
        } catch (Tensors.TensorError e) {
            return dead(DECODE_ERROR, e.getMessage(), value, null, topic, partition, offset, inputAppendMs, received);
        }
        if (batch.getBatchId().isEmpty() || batch.getModel().isEmpty()) {
            DataBatch.Builder b = batch.toBuilder();
            if (batch.getBatchId().isEmpty()) {
                b.setBatchId(topic + "/" + partition + "/" + offset);
            }
            if (batch.getModel().isEmpty()) {
                b.setModel(spec.name());
            }
            batch = b.build();
        }
        if (!batch.getModel().equals(spec.name())) {
            return dead(UNKNOWN_MODEL, "model " + Py.repr(batch.getModel()) + " is not served here (serving "
                    + Py.repr(spec.name()) + ")", value, batch, topic, partition, offset, inputAppendMs, received);
        }
        if (batch.getInput().getDtypeValue() != DType.DTYPE_FLOAT32_VALUE) {
            return dead(BAD_DTYPE, "expected float32 input, got " + Tensors.dtypeName(batch.getInput().getDtypeValue()),
                    value, batch, topic, partition, offset, inputAppendMs, received);
        }
        long[] item = shape.length == 0 ? shape : Arrays.copyOfRange(shape, 1, shape.length);
        if (!Arrays.equals(item, spec.inputShape())) {
            return dead(BAD_SHAPE, "expected shape [batch, " + Py.list(spec.inputShape()).substring(1) + ", got "
                    + Py.list(shape), value, batch, topic, partition, offset, inputAppendMs, received);
        }
        long decodeNs = System.nanoTime() - t0;

        if (client != null) {
            return external(batch, shape, value, received, decodeNs, inputAppendMs, topic, partition, offset);
        }
        long t1 = System.nanoTime();
        Tensor y;
        try {
            y = scorer.score(batch.getInput(), shape);
        } catch (Exception e) {
            return dead(SCORING_ERROR, e.getClass().getSimpleName() + ": " + e.getMessage(), value, batch, topic,
                    partition, offset, inputAppendMs, received);
        }
        return finish(batch, y, received, decodeNs, System.nanoTime() - t1, 0, 0, "", inputAppendMs);
    }

    /** Run the whole path (decode, score, encode) on zero batches of one item for up to
     *  {@code budgetMs} (at most 1000 rounds), so the JIT has compiled it before the first record. */
    void warmup(long budgetMs) {
        long n = 1;
        for (long d : spec.inputShape()) {
            n *= d;
        }
        Tensor.Builder t = Tensor.newBuilder().setDtype(DType.DTYPE_FLOAT32).addShape(1)
                .setData(ByteString.copyFrom(new byte[Math.toIntExact(n * 4)]));
        for (long d : spec.inputShape()) {
            t.addShape(d);
        }
        byte[] value = DataBatch.newBuilder().setBatchId("warmup").setModel(spec.name()).setInput(t).build()
                .toByteArray();
        long deadline = System.nanoTime() + budgetMs * 1_000_000L;
        for (int i = 0; i < 1000 && System.nanoTime() < deadline; i++) {
            process(value, 0, "warmup", 0, i);
        }
    }

    /** sps_workers.external.ExternalStage in blocking mode: retries with backoff, then dead letter. */
    private Result external(DataBatch batch, long[] shape, byte[] value, long received, long decodeNs,
                            long inputAppendMs, String topic, int partition, long offset) {
        for (int attempt = 1; ; attempt++) {
            long started = System.nanoTime();
            try {
                ScoringClient.Answer a = client.score(batch.getInput());
                return finish(batch, a.output(), received, decodeNs, System.nanoTime() - started,
                        a.serverInferenceNs(), a.serverQueueNs(), a.server(), inputAppendMs);
            } catch (ScoringClient.CallError e) {
                if (e.retriable && attempt <= retries) {
                    sleepS(backoffS * Math.pow(2, attempt - 1));
                    continue;
                }
                String detail = ScoringClient.KIND + " at " + client.target + " after " + attempt + " attempt(s): "
                        + e.pyType + ": " + e.getMessage();
                return dead(e.reason, detail, value, batch, topic, partition, offset, inputAppendMs, received);
            }
        }
    }

    private static void sleepS(double s) {
        try {
            Thread.sleep(Math.round(s * 1000));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private Result finish(DataBatch batch, Tensor y, long received, long decodeNs, long inferenceNs,
                          long serverInferenceNs, long serverQueueNs, String server, long inputAppendMs) {
        long t2 = System.nanoTime();
        ScoredBatch.Builder out = ScoredBatch.newBuilder()
                .setBatchId(batch.getBatchId()).setRunId(batch.getRunId()).setSequence(batch.getSequence())
                .setIntendedNs(batch.getIntendedNs()).setCreatedNs(batch.getCreatedNs()).setModel(batch.getModel())
                .setInputAppendMs(inputAppendMs).putAllAttributes(batch.getAttributesMap()).setOutput(y);
        ScoringFacts.Builder f = out.getFactsBuilder()
                .setBackend(backend).setWorkerId(workerId).setEngine(Settings.ENGINE)
                .setWorkerReceiveNs(received).setDecodeNs(decodeNs).setInferenceNs(inferenceNs);
        if (serverInferenceNs != 0) {
            f.setServerInferenceNs(serverInferenceNs);
        }
        if (serverQueueNs != 0) {
            f.setServerQueueNs(serverQueueNs);
        }
        if (!server.isEmpty()) {
            f.setServer(server);
        }
        long encodeNs = System.nanoTime() - t2;
        long sendNs = wallNs();
        f.setEncodeNs(encodeNs).setWorkerSendNs(sendNs);
        return new Result(out.build().toByteArray(), null, "",
                new Timing(batch.getBatchId(), received, decodeNs, inferenceNs, encodeNs, sendNs));
    }

    private Result dead(String reason, String detail, byte[] value, DataBatch batch, String topic, int partition,
                        long offset, long inputAppendMs, long received) {
        String d = Py.head(detail == null ? "" : detail, DETAIL_MAX);
        DeadLetter.Builder dl = DeadLetter.newBuilder().setReason(reason).setDetail(d).setSourceTopic(topic)
                .setSourcePartition(partition).setSourceOffset(offset)
                .setPayload(value == null ? ByteString.EMPTY : ByteString.copyFrom(value))
                .setInputAppendMs(inputAppendMs);
        if (batch != null) {
            dl.setBatchId(batch.getBatchId()).setRunId(batch.getRunId()).setCreatedNs(batch.getCreatedNs())
                    .setIntendedNs(batch.getIntendedNs());
        }
        dl.getFactsBuilder().setBackend(backend).setWorkerId(workerId).setEngine(Settings.ENGINE)
                .setWorkerReceiveNs(received).setError(d).setWorkerSendNs(wallNs());
        return new Result(null, dl.build().toByteArray(), reason, null);
    }
}
