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
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * sps_workers/scoring_op.py for the JVM: decode -> validate -> score -> encode, with the same
 * ScoringFacts stamps, the same dead-letter reasons and the same detail strings. One per worker
 * instance (stream thread); not thread-safe. A batch carries the model's only input ({@code input})
 * or one tensor per input name ({@code inputs}, checked as serving.models.spec.check_feeds).
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
    private final boolean simple;
    private final boolean singleFloat32;
    private final List<String> inputNames;
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
        this.simple = spec.simple();
        this.singleFloat32 = spec.singleFloat32();
        this.inputNames = spec.inputs().stream().map(ModelSpec.TensorSpec::name).toList();
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
        long[] shape = null;
        Map<String, long[]> shapes = null;
        try {
            batch = DataBatch.parseFrom(value == null ? new byte[0] : value);
        } catch (InvalidProtocolBufferException e) {
            return dead(DECODE_ERROR, "not a crayfish.v1.DataBatch: " + e.getMessage(), value, null, topic, partition,
                    offset, inputAppendMs, received);
        }
        // hasInput() first: getInputsCount() on a batch without inputs allocates an empty MapField (the hot
        // path stays as it was); a batch carrying both, against the contract, is read by its input.
        boolean named = !batch.hasInput() && batch.getInputsCount() > 0;
        try {
            if (named) {
                shapes = new HashMap<>();
                for (Map.Entry<String, Tensor> e : batch.getInputsMap().entrySet()) {
                    shapes.put(e.getKey(), Tensors.check(e.getValue()));
                }
            } else {
                shape = Tensors.check(batch.getInput());
            }
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
        Map<String, Tensor> feeds = null;
        if (named || !simple) {
            try {
                feeds = checkFeeds(batch, shape, shapes);
            } catch (FeedError e) {
                return dead(e.reason, e.getMessage(), value, batch, topic, partition, offset, inputAppendMs, received);
            }
        } else {
            if (batch.getInput().getDtypeValue() != DType.DTYPE_FLOAT32_VALUE) {
                return dead(BAD_DTYPE, "expected float32 input, got "
                        + Tensors.dtypeName(batch.getInput().getDtypeValue()), value, batch, topic, partition, offset,
                        inputAppendMs, received);
            }
            long[] item = shape.length == 0 ? shape : Arrays.copyOfRange(shape, 1, shape.length);
            if (!Arrays.equals(item, spec.inputShape())) {
                return dead(BAD_SHAPE, "expected shape [batch, " + Py.list(spec.inputShape()).substring(1) + ", got "
                        + Py.list(shape), value, batch, topic, partition, offset, inputAppendMs, received);
            }
        }
        long decodeNs = System.nanoTime() - t0;

        if (client != null) {
            return external(batch, named, value, received, decodeNs, inputAppendMs, topic, partition, offset);
        }
        long t1 = System.nanoTime();
        Tensor y = null;
        Map<String, Tensor> ys = null;
        try {
            if (feeds == null && singleFloat32) {
                y = scorer.score(batch.getInput(), shape);
            } else {
                ys = scorer.scoreNamed(feeds == null ? Map.of(spec.inputName(), batch.getInput()) : feeds);
                if (!named && !spec.multiOutput()) {
                    y = ys.get(spec.outputName());
                    ys = null;
                }
            }
        } catch (Exception e) {
            return dead(SCORING_ERROR, e.getClass().getSimpleName() + ": " + e.getMessage(), value, batch, topic,
                    partition, offset, inputAppendMs, received);
        }
        return finish(batch, named, y, ys, received, decodeNs, System.nanoTime() - t1, 0, 0, "", inputAppendMs);
    }

    /** A batch whose inputs do not fit the model; {@code reason} is bad_shape or bad_dtype. */
    static final class FeedError extends Exception {
        final String reason;

        FeedError(String reason, String message) {
            super(message);
            this.reason = reason;
        }
    }

    /**
     * serving.models.spec.check_feeds, with its messages: the batch's tensors by input name in the
     * model's order ({@code shapes}: those of the named inputs, else {@code shape}: of the single input).
     */
    private Map<String, Tensor> checkFeeds(DataBatch batch, long[] shape, Map<String, long[]> shapes)
            throws FeedError {
        List<ModelSpec.TensorSpec> inputs = spec.inputs();
        if (shapes == null) {
            if (spec.multiInput()) {
                throw new FeedError(BAD_SHAPE, spec.name() + ": takes named inputs " + String.join(", ", inputNames)
                        + ", got one unnamed tensor");
            }
            checkOne(inputs.get(0), batch.getInput(), shape, -1);
            return Map.of(spec.inputName(), batch.getInput());
        }
        Map<String, Tensor> x = batch.getInputsMap();
        List<String> missing = new ArrayList<>();
        for (String n : inputNames) {
            if (!x.containsKey(n)) {
                missing.add(n);
            }
        }
        TreeSet<String> extra = new TreeSet<>(x.keySet());
        extra.removeAll(inputNames);
        if (!missing.isEmpty() || !extra.isEmpty()) {
            throw new FeedError(BAD_SHAPE, spec.name() + ": inputs " + Py.strList(new TreeSet<>(x.keySet()))
                    + " do not match the model's " + Py.strList(inputNames)
                    + (missing.isEmpty() ? "" : " (missing " + String.join(", ", missing) + ")")
                    + (extra.isEmpty() ? "" : " (unknown " + String.join(", ", extra) + ")"));
        }
        Map<String, Tensor> feeds = new LinkedHashMap<>();
        long rows = -1;
        for (ModelSpec.TensorSpec t : inputs) {
            long[] s = shapes.get(t.name());
            checkOne(t, x.get(t.name()), s, rows);
            rows = s[0];
            feeds.put(t.name(), x.get(t.name()));
        }
        return feeds;
    }

    /** check_feeds' _check_one; {@code rows} of the first input, -1 for the first itself. */
    private void checkOne(ModelSpec.TensorSpec t, Tensor x, long[] shape, long rows) throws FeedError {
        String got = Tensors.dtypeName(x.getDtypeValue()) + " " + Py.list(shape);
        if (x.getDtypeValue() != t.code()) {
            throw new FeedError(BAD_DTYPE, spec.name() + ": input " + t.name() + ": expected " + t.want() + ", got "
                    + got);
        }
        long[] item = shape.length == 0 ? shape : Arrays.copyOfRange(shape, 1, shape.length);
        if (!Arrays.equals(item, t.shape()) || shape.length == 0 || shape[0] < 1) {
            throw new FeedError(BAD_SHAPE, spec.name() + ": input " + t.name() + ": expected " + t.want() + ", got "
                    + got);
        }
        if (rows >= 0 && shape[0] != rows) {
            throw new FeedError(BAD_SHAPE, spec.name() + ": input " + t.name() + " has " + shape[0] + " rows, "
                    + spec.inputName() + " has " + rows + ": every input shares the batch axis");
        }
    }

    /** Run the whole path (decode, score, encode) on zero batches of one item for up to
     *  {@code budgetMs} (at most 1000 rounds), so the JIT has compiled it before the first record.
     *  A model with several inputs gets them by name, one with one input the single tensor. */
    void warmup(long budgetMs) {
        DataBatch.Builder b = DataBatch.newBuilder().setBatchId("warmup").setModel(spec.name());
        for (ModelSpec.TensorSpec t : spec.inputs()) {
            Tensor zeros = Tensors.zeros(t.code(), 1, t.shape());
            if (spec.multiInput()) {
                b.putInputs(t.name(), zeros);
            } else {
                b.setInput(zeros);
            }
        }
        byte[] value = b.build().toByteArray();
        long deadline = System.nanoTime() + budgetMs * 1_000_000L;
        for (int i = 0; i < 1000 && System.nanoTime() < deadline; i++) {
            process(value, 0, "warmup", 0, i);
        }
    }

    /** sps_workers.external.ExternalStage in blocking mode: retries with backoff, then dead letter. */
    private Result external(DataBatch batch, boolean named, byte[] value, long received, long decodeNs,
                            long inputAppendMs, String topic, int partition, long offset) {
        for (int attempt = 1; ; attempt++) {
            long started = System.nanoTime();
            try {
                ScoringClient.Answer a = named ? client.score(batch.getInputsMap()) : client.score(batch.getInput());
                return finish(batch, named, a.output(), a.outputs(), received, decodeNs, System.nanoTime() - started,
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

    /** The output goes back the way the input came: {@code ys} by name (several outputs, or a named
     *  batch), a named batch's single output under the model's output name, else {@code output}. */
    private Result finish(DataBatch batch, boolean named, Tensor y, Map<String, Tensor> ys, long received,
                          long decodeNs, long inferenceNs, long serverInferenceNs, long serverQueueNs, String server,
                          long inputAppendMs) {
        long t2 = System.nanoTime();
        ScoredBatch.Builder out = ScoredBatch.newBuilder()
                .setBatchId(batch.getBatchId()).setRunId(batch.getRunId()).setSequence(batch.getSequence())
                .setIntendedNs(batch.getIntendedNs()).setCreatedNs(batch.getCreatedNs()).setModel(batch.getModel())
                .setInputAppendMs(inputAppendMs).putAllAttributes(batch.getAttributesMap());
        if (ys != null) {
            out.putAllOutputs(ys);
        } else if (named) {
            out.putOutputs(spec.outputName(), y);
        } else {
            out.setOutput(y);
        }
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
