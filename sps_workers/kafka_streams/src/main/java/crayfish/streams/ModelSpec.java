package crayfish.streams;

import java.util.LinkedHashMap;
import java.util.Map;

/** serving/models/spec.py: per-item input/output shapes and tensor names of each model. */
public record ModelSpec(String name, long[] inputShape, long[] outputShape, String inputName, String outputName) {
    static final Map<String, ModelSpec> MODELS = new LinkedHashMap<>();

    static {
        MODELS.put("ffnn", new ModelSpec("ffnn", new long[] {1, 784}, new long[] {10}, "input_1", "output"));
        MODELS.put("resnet50", new ModelSpec("resnet50", new long[] {224, 224, 3}, new long[] {1000}, "input_1",
                "output"));
    }

    public static ModelSpec get(String name) {
        ModelSpec s = MODELS.get(name);
        if (s == null) {
            throw new ConfigError("model: unknown model " + Py.repr(name) + "; known models: "
                    + String.join(", ", new java.util.TreeSet<>(MODELS.keySet())));
        }
        return s;
    }
}
