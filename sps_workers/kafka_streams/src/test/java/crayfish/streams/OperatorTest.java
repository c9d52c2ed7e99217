package crayfish.streams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import crayfish.v1.Batch.DataBatch;
import crayfish.v1.Batch.DeadLetter;
import crayfish.v1.Batch.ScoredBatch;
import crayfish.v1.TensorOuterClass.DType;
import crayfish.v1.TensorOuterClass.Tensor;
import io.grpc.Status;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;

/** The operator's contract with the Python side: stamps, reasons and detail strings. */
class OperatorTest {
    /** The description serving/models/build.py writes into ffnn's manifest.json. */
    static final String FFNN_MANIFEST = "{\"name\": \"ffnn\", \"seed\": 42, \"input_name\": \"input_1\", "
            + "\"output_name\": \"output\", \"input_shape\": [\"batch\", 1, 784], \"input_dtype\": \"float32\", "
            + "\"output_shape\": [\"batch\", 10], \"layout\": {\"dense\": \"[in, out]\"}}";
    private static final ModelSpec FFNN = manifestSpec("ffnn", FFNN_MANIFEST);

    private static ModelSpec manifestSpec(String name, String json) {
        try {
            return ModelSpec.fromManifest(name, new com.fasterxml.jackson.databind.ObjectMapper().readTree(json),
                    "manifest.json");
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(e);
        }
    }

    private static Tensor tensor(DType dtype, int item, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        Tensor.Builder b = Tensor.newBuilder().setDtype(dtype).setData(ByteString.copyFrom(new byte[(int) (n * item)]));
        for (long d : shape) {
            b.addShape(d);
        }
        return b.build();
    }

    private static byte[] batch(String id, String model, Tensor t) {
        return DataBatch.newBuilder().setBatchId(id).setRunId("r").setSequence(7).setCreatedNs(11).setIntendedNs(10)
                .setModel(model).setInput(t).putAttributes("k", "v").build().toByteArray();
    }

    private static Operator noop() {
        return new Operator(FFNN, "ks-0", new Scorers.Zeros("noop", FFNN, 0, 0));
    }

    private static DeadLetter dead(Operator.Result r) throws Exception {
        assertNull(r.value());
        return DeadLetter.parseFrom(r.deadLetter());
    }

    @Test
    void scoresWithTheSameFactsAsThePythonOperator() throws Exception {
        Operator.Result r = noop().process(batch("b1", "ffnn", tensor(DType.DTYPE_FLOAT32, 4, 2, 1, 784)), 1234, "in", 1, 5);
        ScoredBatch s = ScoredBatch.parseFrom(r.value());
        assertEquals("b1", s.getBatchId());
        assertEquals(7, s.getSequence());
        assertEquals(11, s.getCreatedNs());
        assertEquals(10, s.getIntendedNs());
        assertEquals(1234, s.getInputAppendMs());
        assertEquals("v", s.getAttributesMap().get("k"));
        assertEquals(DType.DTYPE_FLOAT32, s.getOutput().getDtype());
        assertEquals(java.util.List.of(2L, 10L), s.getOutput().getShapeList());
        assertEquals("noop", s.getFacts().getBackend());
        assertEquals("kafka-streams", s.getFacts().getEngine());
        assertEquals("ks-0", s.getFacts().getWorkerId());
        assertTrue(s.getFacts().getWorkerSendNs() >= s.getFacts().getWorkerReceiveNs());
        assertEquals("b1", r.timing().batchId());
    }

    @Test
    void emptyBatchIdAndModelAreFilledIn() throws Exception {
        Operator.Result r = noop().process(batch("", "", tensor(DType.DTYPE_FLOAT32, 4, 1, 1, 784)), 1, "in", 0, 42);
        ScoredBatch s = ScoredBatch.parseFrom(r.value());
        assertEquals("in/0/42", s.getBatchId());
        assertEquals("ffnn", s.getModel());
    }

    @Test
    void deadLettersCarryPythonReasonsAndDetails() throws Exception {
        Operator op = noop();
        byte[] garbage = "\u00ff\u0000 this is not protobuf".getBytes(StandardCharsets.ISO_8859_1);
        DeadLetter d = dead(op.process(garbage, 5, "in", 0, 1));
        assertEquals("decode_error", d.getReason());
        assertTrue(d.getDetail().startsWith("not a crayfish.v1.DataBatch: "), d.getDetail());
        assertArrayEquals(garbage, d.getPayload().toByteArray());
        assertEquals("", d.getBatchId());
        assertEquals(5, d.getInputAppendMs());

        d = dead(op.process(batch("s", "ffnn", tensor(DType.DTYPE_FLOAT32, 4, 1, 1, 783)), 5, "in", 1, 2));
        assertEquals("bad_shape", d.getReason());
        assertEquals("expected shape [batch, 1, 784], got [1, 1, 783]", d.getDetail());
        assertEquals("s", d.getBatchId());
        assertEquals("in", d.getSourceTopic());
        assertEquals(1, d.getSourcePartition());
        assertEquals(2, d.getSourceOffset());
        assertEquals("kafka-streams", d.getFacts().getEngine());
        assertEquals(d.getDetail(), d.getFacts().getError());

        d = dead(op.process(batch("t", "ffnn", tensor(DType.DTYPE_FLOAT64, 8, 1, 1, 784)), 5, "in", 1, 3));
        assertEquals("bad_dtype", d.getReason());
        assertEquals("expected float32 input, got float64", d.getDetail());

        d = dead(op.process(batch("u", "gpt", tensor(DType.DTYPE_FLOAT32, 4, 1, 1, 784)), 5, "in", 1, 4));
        assertEquals("unknown_model", d.getReason());
        assertEquals("model 'gpt' is not served here (serving 'ffnn')", d.getDetail());

        Tensor shortData = tensor(DType.DTYPE_FLOAT32, 4, 1, 1, 784).toBuilder().setData(ByteString.copyFrom(new byte[3])).build();
        d = dead(op.process(batch("v", "ffnn", shortData), 5, "in", 1, 5));
        assertEquals("decode_error", d.getReason());
        assertEquals("tensor data has 3 bytes, shape (1, 1, 784) of float32 needs 3136", d.getDetail());
        assertEquals("", d.getBatchId());

        d = dead(op.process(batch("w", "ffnn", Tensor.newBuilder().setDtypeValue(99).addShape(5).build()), 5, "in", 1, 6));
        assertEquals("unknown tensor dtype code 99", d.getDetail());

        d = dead(op.process(null, 5, "in", 1, 7));
        assertEquals("unknown tensor dtype code 0", d.getDetail());
    }

    @Test
    void scorerFailuresAreDeadLettered() throws Exception {
        Scorer broken = new Scorer() {
            public String name() {
                return "onnxruntime";
            }

            public Tensor score(Tensor input, long[] shape) {
                throw new IllegalStateException("boom");
            }

            public java.util.Map<String, Tensor> scoreNamed(java.util.Map<String, Tensor> inputs) {
                throw new IllegalStateException("boom");
            }

            public void close() {
            }
        };
        DeadLetter d = dead(new Operator(FFNN, "w", broken).process(batch("x", "ffnn", tensor(DType.DTYPE_FLOAT32, 4, 1, 1, 784)), 1, "in", 0, 0));
        assertEquals("scoring_error", d.getReason());
        assertEquals("IllegalStateException: boom", d.getDetail());
    }

    @Test
    void grpcStatusesMapLikeServingErrors() {
        ScoringClient.CallError e = ScoringClient.fromStatus(Status.RESOURCE_EXHAUSTED.withDescription("full"));
        assertEquals("OverloadedError", e.pyType);
        assertTrue(e.retriable);
        e = ScoringClient.fromStatus(Status.INVALID_ARGUMENT.withDescription("bad"));
        assertEquals("bad_shape", e.reason);
        assertFalse(e.retriable);
        e = ScoringClient.fromStatus(Status.NOT_FOUND.withDescription("nope"));
        assertEquals("unknown_model", e.reason);
        e = ScoringClient.fromStatus(Status.CANCELLED.withDescription("x"));
        assertEquals("ServingError", e.pyType);
        assertEquals("CANCELLED: x", e.getMessage());
        assertFalse(e.retriable);
    }

    @Test
    void pythonTextForms() {
        assertEquals("'gpt'", Py.repr("gpt"));
        assertEquals("\"it's\"", Py.repr("it's"));
        assertEquals("'a\\nb'", Py.repr("a\nb"));
        assertEquals("(5,)", Py.tuple(new long[] {5}));
        assertEquals("()", Py.tuple(new long[] {}));
        assertEquals("(1, 784)", Py.tuple(new long[] {1, 784}));
        assertEquals("[]", Py.list(new long[] {}));
        assertEquals("['a', \"it's\"]", Py.strList(java.util.List.of("a", "it's")));
        assertEquals("[]", Py.strList(java.util.List.of()));
    }

    @Test
    void sampledTraceparentFlag() {
        RecordHeaders h = new RecordHeaders();
        assertFalse(Tracing.sampled(h));
        h.add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".getBytes());
        assertTrue(Tracing.sampled(h));
        RecordHeaders off = new RecordHeaders();
        off.add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".getBytes());
        assertFalse(Tracing.sampled(off));
    }

    @Test
    void settingsErrorsNameTheField() {
        String base = "{\"bootstrap\":\"h:1\",\"input_topic\":\"i\",\"output_topic\":\"o\",\"dead_letter_topic\":\"d\","
                + "\"consumer_group\":\"g\",\"model\":\"ffnn\"";
        assertEquals(1, Settings.parse(base + "}").parallelism);
        assertTrue(assertThrows(ConfigError.class, () -> Settings.parse(base + ",\"codec\":\"crayfish-json\"}"))
                .getMessage().startsWith("codec: "));
        assertEquals("engine_options.x: unknown option of the kafka-streams engine (known: commit_interval_ms, "
                + "poll_ms, warmup_ms, streams_config, jvm_options)",
                assertThrows(ConfigError.class, () -> Settings.parse(base + ",\"engine_options\":{\"x\":1}}"))
                        .getMessage());
        assertTrue(assertThrows(ConfigError.class, () -> Settings.parse("{\"bootstrap\":\"h:1\"}"))
                .getMessage().startsWith("input_topic: Field required"));
        assertTrue(assertThrows(ConfigError.class,
                () -> Settings.parse(base + ",\"external\":{\"client\":\"scoring\",\"target\":\"h:1\",\"call_mode\":\"pipelined\"}}"))
                .getMessage().startsWith("external.call_mode: "));
        Settings s = Settings.parse(base + ",\"engine_options\":{\"commit_interval_ms\":5,\"streams_config\":{\"poll.ms\":7}}}");
        assertEquals(5, s.commitIntervalMs);
        assertEquals("7", s.streamsConfig.get("poll.ms"));
    }

    @Test
    void modelSpecComesFromTheManifest(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        assertEquals("ffnn", FFNN.name());
        assertArrayEquals(new long[] {1, 784}, FFNN.inputShape());
        assertArrayEquals(new long[] {10}, FFNN.outputShape());
        assertEquals("input_1", FFNN.inputName());
        assertEquals("output", FFNN.outputName());
        // Not built: the error names the model, the folder and the command that builds it.
        String missing = assertThrows(ConfigError.class, () -> ModelSpec.load(dir, "toy")).getMessage();
        assertTrue(missing.startsWith("model: 'toy' is not built in " + dir), missing);
        assertTrue(missing.contains("python -m serving.models build --model toy"), missing);
        // Built: whatever the manifest says (a model added in Python needs nothing in Java).
        java.nio.file.Files.createDirectories(dir.resolve("toy"));
        java.nio.file.Files.writeString(dir.resolve("toy").resolve("manifest.json"),
                FFNN_MANIFEST.replace("ffnn", "toy").replace("1, 784", "3, 4"));
        assertArrayEquals(new long[] {3, 4}, ModelSpec.load(dir, "toy").inputShape());
        // A description that does not fit fails naming the field.
        assertEquals("model: manifest.json: input_dtype: tensor 'input_1' has dtype 'string'; the kafka-streams "
                + "engine takes float32, float64, float16, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool",
                assertThrows(ConfigError.class, () -> manifestSpec("ffnn", FFNN_MANIFEST.replace("float32", "string")))
                        .getMessage());
        assertEquals(DType.DTYPE_INT8_VALUE, manifestSpec("ffnn", FFNN_MANIFEST.replace("float32", "int8"))
                .inputs().get(0).code());
        assertTrue(assertThrows(ConfigError.class, () -> manifestSpec("ffnn", FFNN_MANIFEST.replace("\"output_shape\"", "\"x\"")))
                .getMessage().contains("output_shape"));
        assertTrue(assertThrows(ConfigError.class, () -> manifestSpec("resnet50", FFNN_MANIFEST))
                .getMessage().contains("describes model 'ffnn'"));
    }

    /** serving/models/spec.py manifest_fields of a model with two inputs and two outputs. */
    static final String MASKED_MANIFEST = "{\"name\": \"masked\", \"input_name\": \"features\", "
            + "\"output_name\": \"scores\", \"input_shape\": [\"batch\", 6], \"input_dtype\": \"float32\", "
            + "\"output_shape\": [\"batch\", 3], "
            + "\"inputs\": [{\"name\": \"features\", \"dtype\": \"float32\", \"shape\": [\"batch\", 6]}, "
            + "{\"name\": \"mask\", \"dtype\": \"int64\", \"shape\": [\"batch\", 6], \"range\": [0, 2]}], "
            + "\"outputs\": [{\"name\": \"scores\", \"dtype\": \"float32\", \"shape\": [\"batch\", 3]}, "
            + "{\"name\": \"label\", \"dtype\": \"int64\", \"shape\": [\"batch\"]}]}";
    private static final ModelSpec MASKED = manifestSpec("masked", MASKED_MANIFEST);

    private static byte[] named(String id, String model, java.util.Map<String, Tensor> inputs) {
        return DataBatch.newBuilder().setBatchId(id).setRunId("r").setModel(model).putAllInputs(inputs).build()
                .toByteArray();
    }

    @Test
    void manifestListsEveryTensor() {
        assertEquals(java.util.List.of("features", "mask"),
                MASKED.inputs().stream().map(ModelSpec.TensorSpec::name).toList());
        assertEquals(DType.DTYPE_INT64_VALUE, MASKED.inputs().get(1).code());
        assertArrayEquals(new long[] {}, MASKED.outputs().get(1).shape());
        assertEquals("int64 [b>=1, ]", MASKED.outputs().get(1).want());
        assertTrue(MASKED.multiInput() && MASKED.multiOutput() && !MASKED.simple());
        assertTrue(FFNN.simple() && FFNN.singleFloat32() && !FFNN.multiOutput());
        assertEquals("model: manifest.json: inputs[1]: dtype: tensor 'mask' has dtype 'str'; the kafka-streams engine "
                + "takes float32, float64, float16, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool",
                assertThrows(ConfigError.class, () -> manifestSpec("masked", MASKED_MANIFEST.replaceFirst("int64", "str")))
                        .getMessage());
    }

    @Test
    void namedBatchesAreCheckedLikeCheckFeeds() throws Exception {
        Operator op = new Operator(MASKED, "ks-0", new Scorers.Zeros("noop", MASKED, 0, 0));
        Tensor features = tensor(DType.DTYPE_FLOAT32, 4, 2, 6);
        Tensor mask = tensor(DType.DTYPE_INT64, 8, 2, 6);

        ScoredBatch s = ScoredBatch.parseFrom(op.process(named("a", "masked",
                java.util.Map.of("features", features, "mask", mask)), 1, "in", 0, 0).value());
        assertFalse(s.hasOutput());
        assertEquals(java.util.Set.of("scores", "label"), s.getOutputsMap().keySet());
        assertEquals(java.util.List.of(2L, 3L), s.getOutputsMap().get("scores").getShapeList());
        assertEquals(DType.DTYPE_INT64, s.getOutputsMap().get("label").getDtype());
        assertEquals(java.util.List.of(2L), s.getOutputsMap().get("label").getShapeList());
        assertEquals(16, s.getOutputsMap().get("label").getData().size());

        DeadLetter d = dead(op.process(named("b", "masked", java.util.Map.of("features", features, "extra", mask)),
                1, "in", 0, 1));
        assertEquals("bad_shape", d.getReason());
        assertEquals("masked: inputs ['extra', 'features'] do not match the model's ['features', 'mask'] "
                + "(missing mask) (unknown extra)", d.getDetail());
        d = dead(op.process(named("c", "masked", java.util.Map.of("features", features,
                "mask", tensor(DType.DTYPE_INT32, 4, 2, 6))), 1, "in", 0, 2));
        assertEquals("bad_dtype", d.getReason());
        assertEquals("masked: input mask: expected int64 [b>=1, 6], got int32 [2, 6]", d.getDetail());
        d = dead(op.process(named("d", "masked", java.util.Map.of("features", tensor(DType.DTYPE_FLOAT32, 4, 2, 5),
                "mask", mask)), 1, "in", 0, 3));
        assertEquals("bad_shape", d.getReason());
        assertEquals("masked: input features: expected float32 [b>=1, 6], got float32 [2, 5]", d.getDetail());
        d = dead(op.process(named("e", "masked", java.util.Map.of("features", features,
                "mask", tensor(DType.DTYPE_INT64, 8, 3, 6))), 1, "in", 0, 4));
        assertEquals("bad_shape", d.getReason());
        assertEquals("masked: input mask has 3 rows, features has 2: every input shares the batch axis", d.getDetail());
        d = dead(op.process(batch("f", "masked", features), 1, "in", 0, 5));
        assertEquals("bad_shape", d.getReason());
        assertEquals("masked: takes named inputs features, mask, got one unnamed tensor", d.getDetail());
        d = dead(op.process(named("g", "masked", java.util.Map.of("features", features,
                "mask", mask.toBuilder().setData(ByteString.copyFrom(new byte[5])).build())), 1, "in", 0, 6));
        assertEquals("decode_error", d.getReason());
        assertEquals("tensor data has 5 bytes, shape (2, 6) of int64 needs 96", d.getDetail());
    }

    @Test
    void aOneInputModelAnswersANamedBatchByName() throws Exception {
        Operator op = noop();
        Tensor x = tensor(DType.DTYPE_FLOAT32, 4, 3, 1, 784);
        ScoredBatch s = ScoredBatch.parseFrom(op.process(named("a", "ffnn", java.util.Map.of("input_1", x)), 1, "in",
                0, 0).value());
        assertFalse(s.hasOutput());
        assertEquals(java.util.List.of(3L, 10L), s.getOutputsMap().get("output").getShapeList());
        DeadLetter d = dead(op.process(named("b", "ffnn", java.util.Map.of("input_1",
                tensor(DType.DTYPE_FLOAT64, 8, 3, 1, 784))), 1, "in", 0, 1));
        assertEquals("bad_dtype", d.getReason());
        assertEquals("ffnn: input input_1: expected float32 [b>=1, 1, 784], got float64 [3, 1, 784]", d.getDetail());
        d = dead(op.process(named("c", "ffnn", java.util.Map.of("input_1", tensor(DType.DTYPE_FLOAT32, 4, 0, 1, 784))),
                1, "in", 0, 2));
        assertEquals("bad_shape", d.getReason());
        assertEquals("ffnn: input input_1: expected float32 [b>=1, 1, 784], got float32 [0, 1, 784]", d.getDetail());
        // A one-input model of another dtype: check_feeds on the single tensor, the output unnamed.
        ModelSpec ids = manifestSpec("ffnn", FFNN_MANIFEST.replace("float32", "int64"));
        Operator op2 = new Operator(ids, "ks-0", new Scorers.Zeros("noop", ids, 0, 0));
        s = ScoredBatch.parseFrom(op2.process(batch("d", "ffnn", tensor(DType.DTYPE_INT64, 8, 2, 1, 784)), 1, "in", 0,
                3).value());
        assertEquals(java.util.List.of(2L, 10L), s.getOutput().getShapeList());
        d = dead(op2.process(batch("e", "ffnn", tensor(DType.DTYPE_FLOAT32, 4, 2, 1, 784)), 1, "in", 0, 4));
        assertEquals("ffnn: input input_1: expected int64 [b>=1, 1, 784], got float32 [2, 1, 784]", d.getDetail());
    }

    @Test
    void float32TensorIsLittleEndian() throws Exception {
        ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putFloat(1.5f).putFloat(-2f);
        Tensor t = Tensors.float32(new long[] {1, 2}, ByteString.copyFrom(b.array()));
        assertArrayEquals(new long[] {1, 2}, Tensors.check(t));
        assertEquals(0x3f, t.getData().byteAt(3) & 0xff);
    }
}
