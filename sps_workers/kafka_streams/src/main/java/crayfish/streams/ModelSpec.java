package crayfish.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What a model takes and returns per item (serving/models/spec.py), read from the built model's
 * {@code <models_dir>/<model>/manifest.json}, which serving/models/build.py writes from the model's
 * own module: a model added to the Python registry needs nothing here.
 */
public record ModelSpec(String name, long[] inputShape, long[] outputShape, String inputName, String outputName) {
    static final String MANIFEST = "manifest.json";

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

    /** The description fields of a manifest (input_name, output_name, input_shape, input_dtype,
     *  output_shape; shapes with the batch axis first, named "batch"). */
    static ModelSpec fromManifest(String name, JsonNode m, String where) {
        if (m == null || !m.isObject()) {
            throw new ConfigError("model: " + where + " is not a JSON object");
        }
        if (!name.equals(text(m, "name", where))) {
            throw new ConfigError("model: " + where + " describes model " + Py.repr(text(m, "name", where))
                    + ", not " + Py.repr(name));
        }
        String dtype = text(m, "input_dtype", where);
        if (!dtype.equals("float32")) {
            throw new ConfigError("model: " + Py.repr(name) + " takes " + dtype + " inputs; the " + Settings.ENGINE
                    + " engine scores float32 models only");
        }
        return new ModelSpec(name, itemShape(m, "input_shape", where), itemShape(m, "output_shape", where),
                text(m, "input_name", where), text(m, "output_name", where));
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
        if (v == null || !v.isArray() || v.size() < 2 || !v.get(0).isTextual()) {
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
