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
import crayfish.v1.TensorOuterClass.Tensor;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
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
        private final long[] outShape;
        private final long delayNs;
        private final long spinNs;

        Zeros(String name, ModelSpec spec, long delayNs, long spinNs) {
            this.name = name;
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
        public void close() {
        }
    }

    /**
     * ``onnxruntime``: the model's ONNX export in one ORT session (1 intra-op / 1 inter-op thread by
     * default, as the paper), sequential execution. The input bytes are copied once into a reused
     * direct buffer that ORT reads without another copy.
     */
    static final class Onnx implements Scorer {
        private static final List<String> LEVELS = List.of("disable", "basic", "extended", "all");
        private final OrtEnvironment env;
        private final OrtSession session;
        private final String inputName;
        private final Set<String> outputs;
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
            if (!session.getInputNames().equals(Set.of(spec.inputName()))
                    || !session.getOutputNames().contains(spec.outputName())) {
                throw new ConfigError("models_dir: backend 'onnxruntime': " + path + " has inputs "
                        + session.getInputNames() + " / outputs " + session.getOutputNames() + ", expected "
                        + Py.repr(spec.inputName()) + " / " + Py.repr(spec.outputName()));
            }
            inputName = spec.inputName();
            outputs = Set.of(spec.outputName());
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
        public void close() {
            try {
                session.close();
            } catch (OrtException e) {
                // closing at shutdown: nothing left to do
            }
        }
    }
}
