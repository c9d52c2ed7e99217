package crayfish.streams;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtLoggingLevel;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import com.google.protobuf.ByteString;
import com.google.protobuf.UnsafeByteOperations;
import crayfish.v1.TensorOuterClass.DType;
import crayfish.v1.TensorOuterClass.Tensor;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.locks.LockSupport;

/** The embedded backends of serving/embedded, for the JVM: onnxruntime, noop, sleep. */
final class Scorers {
    private Scorers() {
    }

    static final List<String> BACKENDS = List.of("onnxruntime", "noop", "sleep");

    static Scorer create(Settings s, ModelSpec spec) {
        switch (s.backend) {
            case "onnxruntime":
                return new Onnx(s, spec);
            case "noop":
                new BackendOptions("noop", s.backendOptions, List.of());
                return new Zeros("noop", spec, 0, 0);
            case "sleep": {
                BackendOptions o = new BackendOptions("sleep", s.backendOptions, List.of("delay_ms", "spin_us"));
                double delayMs = o.number("delay_ms", null, true);
                double spinUs = o.number("spin_us", 1000.0, true);
                return new Zeros("sleep", spec, Math.round(delayMs * 1e6), Math.round(spinUs * 1e3));
            }
            default:
                throw new ConfigError("backend: " + Py.repr(s.backend) + " is not available in the " + Settings.ENGINE
                        + " engine; known: " + String.join(", ", BACKENDS));
        }
    }

    /** ``noop`` (zeros) and ``sleep`` (a fixed delay, then zeros): calibration backends. */
    static final class Zeros implements Scorer {
        private final String name;
        private final ModelSpec spec;
        private final long[] outShape;
        private final long delayNs;
        private final long spinNs;

        Zeros(String name, ModelSpec spec, long delayNs, long spinNs) {
            this.name = name;
            this.spec = spec;
            this.outShape = spec.outputShape();
            this.delayNs = delayNs;
            this.spinNs = spinNs;
        }

        @Override
        public String name() {
            return name;
        }

        @Override
        public Tensor score(Tensor input, long[] shape) {
            delay();
            long[] out = new long[outShape.length + 1];
            out[0] = shape[0];
            long n = shape[0];
            for (int i = 0; i < outShape.length; i++) {
                out[i + 1] = outShape[i];
                n *= outShape[i];
            }
            return Tensors.float32(out, ByteString.copyFrom(new byte[Math.toIntExact(n * 4)]));
        }

        @Override
        public Map<String, Tensor> scoreNamed(Map<String, Tensor> inputs) {
            delay();
            long rows = inputs.get(spec.inputName()).getShape(0);
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (ModelSpec.TensorSpec t : spec.outputs()) {
                out.put(t.name(), Tensors.zeros(t.code(), rows, t.shape()));
            }
            return out;
        }

        private void delay() {
            if (delayNs > 0) {
                long deadline = System.nanoTime() + delayNs;
                long coarse = delayNs - spinNs;
                if (coarse > 0) {
                    LockSupport.parkNanos(coarse);
                }
                long left;
                while ((left = deadline - System.nanoTime()) > 0) {
                    if (left > spinNs) {
                        LockSupport.parkNanos(left - spinNs);
                    } else {
                        Thread.onSpinWait();
                    }
                }
            }
        }

        @Override
        public void close() {
        }
    }

    /**
     * ``onnxruntime``: the model's ONNX export in one ORT session (1 intra-op / 1 inter-op thread by
     * default, as the paper), sequential execution. The input bytes are copied once into a reused
     * direct buffer (one per input) that ORT reads without another copy. Every input is fed by name
     * with its own dtype; every output of the model comes back by name with its dtype.
     */
    static final class Onnx implements Scorer {
        private static final List<String> LEVELS = List.of("disable", "basic", "extended", "all");
        /** The dtypes ONNX Runtime's Java API reads and writes, by numpy name. */
        private static final Map<String, OnnxJavaType> JAVA_TYPES = javaTypes();

        private static Map<String, OnnxJavaType> javaTypes() {
            Map<String, OnnxJavaType> m = new LinkedHashMap<>();
            m.put("float32", OnnxJavaType.FLOAT);
            m.put("float64", OnnxJavaType.DOUBLE);
            m.put("float16", OnnxJavaType.FLOAT16);
            m.put("int8", OnnxJavaType.INT8);
            m.put("int16", OnnxJavaType.INT16);
            m.put("int32", OnnxJavaType.INT32);
            m.put("int64", OnnxJavaType.INT64);
            m.put("uint8", OnnxJavaType.UINT8);
            m.put("bool", OnnxJavaType.BOOL);
            return m;
        }

        private final OrtEnvironment env;
        private final OrtSession session;
        private final String inputName;
        private final Set<String> outputs;
        private final List<ModelSpec.TensorSpec> inputSpecs;
        private final OnnxJavaType[] inputTypes;
        private final ByteBuffer[] inputBuffers;
        private final Set<String> allOutputs = new LinkedHashSet<>();
        private ByteBuffer in = ByteBuffer.allocateDirect(0);

        Onnx(Settings s, ModelSpec spec) {
            BackendOptions o = new BackendOptions("onnxruntime", s.backendOptions,
                    List.of("intra_op_threads", "inter_op_threads", "device", "graph_optimization"));
            int intra = (int) o.integer("intra_op_threads", 1L, true);
            int inter = (int) o.integer("inter_op_threads", 1L, true);
            String device = o.choice("device", "cpu", null).toLowerCase();
            String level = o.choice("graph_optimization", "all", LEVELS);
            if (device.equals("cuda")) {
                throw new ConfigError("backend_options: backend 'onnxruntime': device 'cuda' needs ONNX Runtime's CUDA "
                        + "build (com.microsoft.onnxruntime:onnxruntime_gpu); this worker bundles the CPU build");
            }
            if (!device.equals("cpu")) {
                throw new ConfigError("backend_options: backend 'onnxruntime': device " + Py.repr(device)
                        + "; use cpu or cuda");
            }
            Path path = s.modelsRoot().resolve(spec.name()).resolve(spec.name() + ".onnx");
            if (!Files.isRegularFile(path)) {
                throw new ConfigError("models_dir: backend 'onnxruntime': no ONNX file at " + path + "; run "
                        + "`python -m serving.models build --model " + spec.name() + "`");
            }
            env = OrtEnvironment.getEnvironment(OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR);
            try (OrtSession.SessionOptions so = new OrtSession.SessionOptions()) {
                so.setIntraOpNumThreads(intra);
                so.setInterOpNumThreads(inter);
                so.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL);
                so.setOptimizationLevel(Map.of(
                        "disable", OrtSession.SessionOptions.OptLevel.NO_OPT,
                        "basic", OrtSession.SessionOptions.OptLevel.BASIC_OPT,
                        "extended", OrtSession.SessionOptions.OptLevel.EXTENDED_OPT,
                        "all", OrtSession.SessionOptions.OptLevel.ALL_OPT).get(level));
                so.setSessionLogLevel(OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR);
                session = env.createSession(path.toString(), so);
            } catch (OrtException e) {
                throw new ConfigError("models_dir: backend 'onnxruntime': cannot load " + path + ": " + e.getMessage());
            }
            List<String> wantIn = spec.inputs().stream().map(ModelSpec.TensorSpec::name).sorted().toList();
            List<String> wantOut = spec.outputs().stream().map(ModelSpec.TensorSpec::name).toList();
            if (!new TreeSet<>(session.getInputNames()).equals(new TreeSet<>(wantIn))
                    || !session.getOutputNames().containsAll(wantOut)) {
                String has = Py.strList(new TreeSet<>(session.getInputNames())) + " / outputs "
                        + Py.strList(new TreeSet<>(session.getOutputNames()));
                close();
                throw new ConfigError("models_dir: backend 'onnxruntime': " + path + " has inputs " + has
                        + ", expected " + Py.strList(wantIn) + " / " + Py.strList(wantOut));
            }
            List<ModelSpec.TensorSpec> tensors = new ArrayList<>(spec.inputs());
            tensors.addAll(spec.outputs());
            for (ModelSpec.TensorSpec t : tensors) {
                if (javaType(t.code()) == null) {
                    close();
                    throw new ConfigError("models_dir: backend 'onnxruntime': tensor " + Py.repr(t.name()) + " of "
                            + path + " is " + t.dtype() + "; ONNX Runtime's Java API takes "
                            + String.join(", ", JAVA_TYPES.keySet()));
                }
            }
            inputSpecs = spec.inputs();
            inputTypes = new OnnxJavaType[inputSpecs.size()];
            inputBuffers = new ByteBuffer[inputSpecs.size()];
            for (int i = 0; i < inputTypes.length; i++) {
                inputTypes[i] = javaType(inputSpecs.get(i).code());
            }
            for (ModelSpec.TensorSpec t : spec.outputs()) {
                allOutputs.add(t.name());
            }
            inputName = spec.inputName();
            outputs = Set.of(spec.outputName());
        }

        static OnnxJavaType javaType(int code) {
            String name = Tensors.dtypeName(code);
            return name == null ? null : JAVA_TYPES.get(name);
        }

        /** DType code of an ORT output; -1 for those crayfish.v1 has no code for. */
        static int dtypeCode(TensorInfo.OnnxTensorType t) {
            switch (t) {
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DType.DTYPE_FLOAT32_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return DType.DTYPE_FLOAT64_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DType.DTYPE_FLOAT16_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return DType.DTYPE_INT8_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return DType.DTYPE_INT16_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return DType.DTYPE_INT32_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DType.DTYPE_INT64_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return DType.DTYPE_UINT8_VALUE;
                case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return DType.DTYPE_BOOL_VALUE;
                default: return -1;
            }
        }

        @Override
        public String name() {
            return "onnxruntime";
        }

        @Override
        public Tensor score(Tensor input, long[] shape) throws OrtException {
            ByteString data = input.getData();
            if (in.capacity() < data.size()) {
                in = ByteBuffer.allocateDirect(data.size()).order(ByteOrder.nativeOrder());
            }
            in.clear();
            data.copyTo(in);
            in.flip();
            try (OnnxTensor x = OnnxTensor.createTensor(env, in.asFloatBuffer(), shape);
                 OrtSession.Result r = session.run(Map.of(inputName, x), outputs)) {
                OnnxValue v = r.get(0);
                if (!(v instanceof OnnxTensor)) {
                    throw new IllegalStateException("onnxruntime returned a " + v.getType() + ", not a tensor");
                }
                OnnxTensor y = (OnnxTensor) v;
                TensorInfo info = y.getInfo();
                if (info.type != OnnxJavaType.FLOAT) {
                    throw new IllegalStateException("onnxruntime returned " + info.type + ", not float32");
                }
                ByteBuffer out = y.getByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
                return Tensors.float32(info.getShape(), UnsafeByteOperations.unsafeWrap(out));
            }
        }

        @Override
        public Map<String, Tensor> scoreNamed(Map<String, Tensor> feeds) throws OrtException {
            Map<String, OnnxTensor> x = new HashMap<>(inputTypes.length * 2);
            try {
                for (int i = 0; i < inputTypes.length; i++) {
                    Tensor t = feeds.get(inputSpecs.get(i).name());
                    inputBuffers[i] = Tensors.direct(t, inputBuffers[i]);
                    x.put(inputSpecs.get(i).name(),
                            OnnxTensor.createTensor(env, inputBuffers[i], Tensors.shape(t), inputTypes[i]));
                }
                try (OrtSession.Result r = session.run(x, allOutputs)) {
                    Map<String, Tensor> out = new LinkedHashMap<>();
                    for (String name : allOutputs) {
                        OnnxValue v = r.get(name).orElseThrow(() -> new IllegalStateException(
                                "onnxruntime returned no output " + Py.repr(name)));
                        if (!(v instanceof OnnxTensor)) {
                            throw new IllegalStateException("onnxruntime returned a " + v.getType() + " for "
                                    + Py.repr(name) + ", not a tensor");
                        }
                        TensorInfo info = ((OnnxTensor) v).getInfo();
                        int code = dtypeCode(info.onnxType);
                        if (code < 0) {
                            throw new IllegalStateException("onnxruntime returned " + info.onnxType + " for "
                                    + Py.repr(name));
                        }
                        ByteBuffer y = ((OnnxTensor) v).getByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
                        out.put(name, Tensors.of(code, info.getShape(), UnsafeByteOperations.unsafeWrap(y)));
                    }
                    return out;
                }
            } finally {
                x.values().forEach(OnnxTensor::close);
            }
        }

        @Override
        public void close() {
            try {
                session.close();
            } catch (OrtException e) {
                // closing at shutdown: nothing left to do
            }
        }
    }
}
