package crayfish.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import crayfish.v1.TensorOuterClass.DType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * What a model takes and returns per item (serving/models/spec.py), read from the built model's
 * {@code <models_dir>/<model>/manifest.json}, which serving/models/build.py writes from the model's
 * own module: a model added to the Python registry needs nothing here. {@code inputs} / {@code outputs}
 * list every tensor in the model's order; the single-tensor accessors describe the first of each.
 */
public record ModelSpec(String name, List<TensorSpec> inputs, List<TensorSpec> outputs) {
    static final String MANIFEST = "manifest.json";

    /** One tensor per item: name, numpy dtype name and its DType code, shape without the batch axis. */
    public record TensorSpec(String name, String dtype, int code, long[] shape) {
        /** "int64 [b>=1, 6]", as check_feeds writes what it expected. */
        String want() {
            return dtype + " [b>=1, " + Py.list(shape).substring(1);
        }
    }

    public ModelSpec {
        inputs = List.copyOf(inputs);
        outputs = List.copyOf(outputs);
    }

    String inputName() {
        return inputs.get(0).name();
    }

    long[] inputShape() {
        return inputs.get(0).shape();
    }

    String outputName() {
        return outputs.get(0).name();
    }

    long[] outputShape() {
        return outputs.get(0).shape();
    }

    boolean multiInput() {
        return inputs.size() > 1;
    }

    boolean multiOutput() {
        return outputs.size() > 1;
    }

    /** One float32 input: the single-tensor checks inline (scoring_op's {@code _simple}). */
    boolean simple() {
        return inputs.size() == 1 && inputs.get(0).code() == DType.DTYPE_FLOAT32_VALUE;
    }

    /** ... and one float32 output: {@link Scorer#score(crayfish.v1.TensorOuterClass.Tensor, long[])}. */
    boolean singleFloat32() {
        return simple() && outputs.size() == 1 && outputs.get(0).code() == DType.DTYPE_FLOAT32_VALUE;
    }

    /** The spec of {@code name} as built under {@code modelsRoot}; ConfigError naming what is missing. */
    public static ModelSpec load(Path modelsRoot, String name) {
        Path path = modelsRoot.resolve(name).resolve(MANIFEST);
        if (!Files.isRegularFile(path)) {
            throw new ConfigError("model: " + Py.repr(name) + " is not built in " + modelsRoot + " (no " + path
                    + "); run `python -m serving.models build --model " + name + " --dir " + modelsRoot + "`");
        }
        JsonNode manifest;
        try {
            manifest = new ObjectMapper().readTree(Files.readString(path));
        } catch (IOException e) {
            throw new ConfigError("model: cannot read " + path + ": " + e.getMessage());
        }
        return fromManifest(name, manifest, path.toString());
    }

    /** The description fields of a manifest: the lists {@code inputs} / {@code outputs} of
     *  {name, dtype, shape}, else the single fields (input_name, input_dtype, input_shape,
     *  output_name, output_shape; float32 output); shapes with the batch axis first, named "batch". */
    static ModelSpec fromManifest(String name, JsonNode m, String where) {
        if (m == null || !m.isObject()) {
            throw new ConfigError("model: " + where + " is not a JSON object");
        }
        if (!name.equals(text(m, "name", where))) {
            throw new ConfigError("model: " + where + " describes model " + Py.repr(text(m, "name", where))
                    + ", not " + Py.repr(name));
        }
        List<TensorSpec> inputs = tensors(m, "inputs", where);
        if (inputs.isEmpty()) {
            inputs = List.of(tensor(text(m, "input_name", where), text(m, "input_dtype", where), m, "input_shape",
                    "input_dtype", where));
        }
        List<TensorSpec> outputs = tensors(m, "outputs", where);
        if (outputs.isEmpty()) {
            outputs = List.of(tensor(text(m, "output_name", where), "float32", m, "output_shape", "output_name",
                    where));
        }
        return new ModelSpec(name, inputs, outputs);
    }

    private static List<TensorSpec> tensors(JsonNode m, String field, String where) {
        JsonNode v = m.get(field);
        List<TensorSpec> out = new ArrayList<>();
        if (v == null || v.isNull()) {
            return out;
        }
        if (!v.isArray()) {
            throw new ConfigError("model: " + where + ": " + field + " must be a list of {name, dtype, shape}");
        }
        for (int i = 0; i < v.size(); i++) {
            String at = field + "[" + i + "]";
            JsonNode t = v.get(i);
            if (!t.isObject()) {
                throw new ConfigError("model: " + where + ": " + at + " must be {name, dtype, shape}");
            }
            String in = where + ": " + at;
            out.add(tensor(text(t, "name", in), text(t, "dtype", in), t, "shape", "dtype", in));
        }
        return out;
    }

    private static TensorSpec tensor(String tensorName, String dtype, JsonNode node, String shapeField,
                                     String dtypeField, String where) {
        int code = Tensors.dtypeCode(dtype);
        if (code < 0) {
            throw new ConfigError("model: " + where + ": " + dtypeField + ": tensor " + Py.repr(tensorName)
                    + " has dtype " + Py.repr(dtype) + "; the " + Settings.ENGINE + " engine takes "
                    + String.join(", ", Tensors.DTYPE_NAMES));
        }
        return new TensorSpec(tensorName, dtype, code, itemShape(node, shapeField, where));
    }

    private static String text(JsonNode m, String field, String where) {
        JsonNode v = m.get(field);
        if (v == null || !v.isTextual() || v.asText().isEmpty()) {
            throw new ConfigError("model: " + where + ": " + field + " missing or not a string");
        }
        return v.asText();
    }

    /** ["batch", d1, d2, ...] -> {d1, d2, ...}. */
    private static long[] itemShape(JsonNode m, String field, String where) {
        JsonNode v = m.get(field);
        if (v == null || !v.isArray() || v.size() < 1 || !v.get(0).isTextual()) {
            throw new ConfigError("model: " + where + ": " + field + " must be [\"batch\", d1, ...]");
        }
        long[] shape = new long[v.size() - 1];
        for (int i = 1; i < v.size(); i++) {
            if (!v.get(i).isIntegralNumber() || v.get(i).asLong() < 1) {
                throw new ConfigError("model: " + where + ": " + field + "[" + i + "] must be a positive integer, got "
                        + v.get(i));
            }
            shape[i - 1] = v.get(i).asLong();
        }
        return shape;
    }
}
