package crayfish.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * The WorkerSettings JSON document (sps_workers/settings.py), read field by field so that a bad
 * value fails with one line naming the field. Unknown top-level fields are ignored (as pydantic
 * does); unknown engine_options keys are rejected.
 *
 * <p>{@code kafka_client} (references to secrets only) and {@code start_offsets} are not read here:
 * the Python launcher resolves the client properties and hands them over in the environment
 * variable {@link #KAFKA_CLIENT_ENV} ({@link #kafkaClient}); the start offsets are the consumer
 * group's committed offsets, which the runner sets before the worker starts.
 */
public final class Settings {
    public static final String ENGINE = "kafka-streams";

    /** engine_options keys this engine understands, in the order of the Python class
     *  (sps_workers/kafka_streams/options.py; jvm_options is read by the Python launcher). */
    public static final List<String> ENGINE_OPTION_KEYS =
            List.of("commit_interval_ms", "poll_ms", "warmup_ms", "streams_config", "jvm_options");

    /** The environment variable in which the launcher passes the cluster's Java client properties
     *  (a JSON object of strings, resolved: it may hold secrets, so it is never written to a file). */
    public static final String KAFKA_CLIENT_ENV = "CRAYFISH_KAFKA_CLIENT";

    public String bootstrap;
    public String inputTopic;
    public String outputTopic;
    public String deadLetterTopic;
    public String consumerGroup;
    public String codec;
    public String model;
    public String backend;
    public Map<String, JsonNode> backendOptions;
    public String modelsDir;
    public int parallelism;
    public String workerId;
    public int maxPollRecords;
    public External external;
    public String readyFile;

    // engine_options
    public long commitIntervalMs = 100;
    public long warmupMs = 2000;
    public Long pollMs;
    public Map<String, String> streamsConfig = new LinkedHashMap<>();

    /** The cluster's client properties (security), Java names, resolved: {@link #kafkaClient}. */
    public Map<String, String> kafkaClient = new LinkedHashMap<>();

    /** ExternalSettings: how to reach the external model server. */
    public static final class External {
        public String client;
        public String target;
        public String callMode;
        public double timeoutS;
        public int retries;
        public double backoffS;
        public String rootCertFile;
    }

    public static Settings load(String arg) {
        return load(arg, System.getenv());
    }

    /** {@link #load(String)} with the client properties of {@link #KAFKA_CLIENT_ENV} in {@code env}. */
    public static Settings load(String arg, Map<String, String> env) {
        Settings s = parseArg(arg);
        s.kafkaClient = kafkaClient(env.get(KAFKA_CLIENT_ENV));
        return s;
    }

    private static Settings parseArg(String arg) {
        String raw = arg;
        if (arg.startsWith("@")) {
            try {
                raw = Files.readString(Path.of(arg.substring(1)));
            } catch (IOException e) {
                throw new ConfigError("--config: cannot read " + arg.substring(1) + ": " + e.getMessage());
            }
        }
        return parse(raw);
    }

    public static Settings parse(String json) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new ConfigError("--config: not a JSON document: " + e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) {
            throw new ConfigError("--config: expected a JSON object (WorkerSettings)");
        }
        Settings s = new Settings();
        s.bootstrap = str(root, "bootstrap", null, true);
        s.inputTopic = str(root, "input_topic", null, true);
        s.outputTopic = str(root, "output_topic", null, true);
        s.deadLetterTopic = str(root, "dead_letter_topic", null, true);
        s.consumerGroup = str(root, "consumer_group", null, true);
        s.codec = str(root, "codec", "protobuf", false);
        s.model = str(root, "model", null, true);
        s.backend = str(root, "backend", "onnxruntime", false);
        s.backendOptions = obj(root, "backend_options");
        s.modelsDir = str(root, "models_dir", null, false);
        s.parallelism = (int) integer(root, "parallelism", 1, 1);
        s.workerId = str(root, "worker_id", "kafka", false);
        s.maxPollRecords = (int) integer(root, "max_poll_records", 256, 1);
        s.readyFile = str(root, "ready_file", null, false);

        if (!"protobuf".equals(s.codec)) {
            throw new ConfigError("codec: " + Py.repr(s.codec) + " is not supported by the " + ENGINE
                    + " engine (it speaks the protobuf codec only)");
        }
        // The model itself is checked when the worker reads its manifest (ModelSpec.load).

        JsonNode ext = root.get("external");
        if (ext != null && !ext.isNull()) {
            s.external = external(ext);
        }
        engineOptions(s, root.get("engine_options"));
        return s;
    }

    /** The client properties the launcher passed: a JSON object of string values (empty when unset).
     *  Errors never quote the text: it may hold secrets. */
    public static Map<String, String> kafkaClient(String json) {
        Map<String, String> out = new LinkedHashMap<>();
        if (json == null || json.isBlank()) {
            return out;
        }
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            root = null;
        }
        if (root == null || !root.isObject()) {
            throw new ConfigError(KAFKA_CLIENT_ENV + ": expected a JSON object of Kafka client properties");
        }
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> f = it.next();
            if (!f.getValue().isTextual()) {
                throw new ConfigError(KAFKA_CLIENT_ENV + "." + f.getKey() + ": expected a string value");
            }
            out.put(f.getKey(), f.getValue().asText());
        }
        return out;
    }

    private static External external(JsonNode node) {
        if (!node.isObject()) {
            throw new ConfigError("external: expected an object (ExternalSettings)");
        }
        External e = new External();
        e.client = str(node, "client", null, true, "external.");
        e.target = str(node, "target", null, true, "external.");
        e.callMode = str(node, "call_mode", "blocking", false, "external.");
        e.timeoutS = number(node, "timeout_s", 5.0, "external.");
        e.retries = (int) integer(node, "retries", 2, 0, "external.");
        e.backoffS = number(node, "backoff_s", 0.05, "external.");
        if (!"scoring".equals(e.client)) {
            throw new ConfigError("external.client: " + Py.repr(e.client) + " is not supported by the " + ENGINE
                    + " engine; it calls the crayfish.v1.Scoring gRPC service ('scoring') only");
        }
        if (!"blocking".equals(e.callMode)) {
            throw new ConfigError("external.call_mode: " + Py.repr(e.callMode) + " is not supported by the "
                    + ENGINE + " engine; a Kafka Streams processor scores one record at a time ('blocking')");
        }
        if (!(e.timeoutS > 0)) {
            throw new ConfigError("external.timeout_s: must be greater than 0, got " + e.timeoutS);
        }
        if (e.backoffS < 0) {
            throw new ConfigError("external.backoff_s: must be >= 0, got " + e.backoffS);
        }
        // max_in_flight / microbatch_max only matter for pipelined / micro-batched calls.
        Map<String, JsonNode> opts = obj(node, "client_options", "external.");
        for (Map.Entry<String, JsonNode> o : opts.entrySet()) {
            if (!o.getKey().equals("root_cert_file")) {
                throw new ConfigError("external.client_options: unknown option " + Py.repr(o.getKey())
                        + "; the scoring client takes: 'root_cert_file'");
            }
            if (!o.getValue().isNull()) {
                if (!o.getValue().isTextual()) {
                    throw new ConfigError("external.client_options.root_cert_file: expected a path string");
                }
                e.rootCertFile = o.getValue().asText();
            }
        }
        return e;
    }

    private static void engineOptions(Settings s, JsonNode node) {
        if (node == null || node.isNull()) {
            return;
        }
        if (!node.isObject()) {
            throw new ConfigError("engine_options: expected an object");
        }
        Set<String> unknown = new TreeSet<>();
        node.fieldNames().forEachRemaining(k -> {
            if (!ENGINE_OPTION_KEYS.contains(k)) {
                unknown.add(k);
            }
        });
        if (!unknown.isEmpty()) {
            // sps_workers/options.py's format: one line naming the option(s) and the engine.
            List<String> where = new ArrayList<>();
            unknown.forEach(k -> where.add("engine_options." + k));
            throw new ConfigError(String.join(", ", where) + ": unknown option" + (unknown.size() > 1 ? "s" : "")
                    + " of the " + ENGINE + " engine (known: " + String.join(", ", ENGINE_OPTION_KEYS) + ")");
        }
        s.commitIntervalMs = integer(node, "commit_interval_ms", 100, 0, "engine_options.");
        s.warmupMs = integer(node, "warmup_ms", 2000, 0, "engine_options.");
        if (node.has("poll_ms") && !node.get("poll_ms").isNull()) {
            s.pollMs = integer(node, "poll_ms", 100, 0, "engine_options.");
        }
        JsonNode sc = node.get("streams_config");
        if (sc != null && !sc.isNull()) {
            if (!sc.isObject()) {
                throw new ConfigError("engine_options.streams_config: expected an object of Kafka Streams properties");
            }
            for (Iterator<Map.Entry<String, JsonNode>> it = sc.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> f = it.next();
                if (!f.getValue().isValueNode() || f.getValue().isNull()) {
                    throw new ConfigError("engine_options.streams_config." + f.getKey() + ": expected a scalar value");
                }
                s.streamsConfig.put(f.getKey(), f.getValue().asText());
            }
        }
        JsonNode jvm = node.get("jvm_options");
        if (jvm != null && !jvm.isNull()) {
            if (!jvm.isArray()) {
                throw new ConfigError("engine_options.jvm_options: expected a list of strings");
            }
            for (JsonNode j : jvm) {
                if (!j.isTextual()) {
                    throw new ConfigError("engine_options.jvm_options: expected a list of strings");
                }
            }
        }
    }

    // -- field readers ---------------------------------------------------------------------------

    private static String str(JsonNode n, String field, String dflt, boolean required) {
        return str(n, field, dflt, required, "");
    }

    private static String str(JsonNode n, String field, String dflt, boolean required, String prefix) {
        JsonNode v = n.get(field);
        if (v == null || v.isNull()) {
            if (required) {
                throw new ConfigError(prefix + field + ": Field required");
            }
            return dflt;
        }
        if (!v.isTextual()) {
            throw new ConfigError(prefix + field + ": Input should be a valid string, got " + v);
        }
        if (required && v.asText().isEmpty()) {
            throw new ConfigError(prefix + field + ": must not be empty");
        }
        return v.asText();
    }

    private static long integer(JsonNode n, String field, long dflt, long min) {
        return integer(n, field, dflt, min, "");
    }

    private static long integer(JsonNode n, String field, long dflt, long min, String prefix) {
        JsonNode v = n.get(field);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (!v.canConvertToExactIntegral() || !v.isNumber()) {
            throw new ConfigError(prefix + field + ": Input should be a valid integer, got " + v);
        }
        long x = v.asLong();
        if (x < min) {
            throw new ConfigError(prefix + field + ": Input should be greater than or equal to " + min + ", got " + x);
        }
        return x;
    }

    private static double number(JsonNode n, String field, double dflt, String prefix) {
        JsonNode v = n.get(field);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (!v.isNumber()) {
            throw new ConfigError(prefix + field + ": Input should be a valid number, got " + v);
        }
        return v.asDouble();
    }

    private static Map<String, JsonNode> obj(JsonNode n, String field) {
        return obj(n, field, "");
    }

    private static Map<String, JsonNode> obj(JsonNode n, String field, String prefix) {
        Map<String, JsonNode> out = new LinkedHashMap<>();
        JsonNode v = n.get(field);
        if (v == null || v.isNull()) {
            return out;
        }
        if (!v.isObject()) {
            throw new ConfigError(prefix + field + ": Input should be a valid dictionary, got " + v);
        }
        v.fields().forEachRemaining(e -> out.put(e.getKey(), e.getValue()));
        return out;
    }

    /** Where the built models live: models_dir, else $CRAYFISH_MODELS_DIR, else .cache/models. */
    public Path modelsRoot() {
        if (modelsDir != null) {
            return Path.of(modelsDir);
        }
        String env = System.getenv("CRAYFISH_MODELS_DIR");
        return env != null && !env.isEmpty() ? Path.of(env) : Path.of(".cache", "models");
    }
}
