package crayfish.streams;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/** serving.embedded.base.Scorer.resolve_options: unknown names and bad values fail naming the option. */
final class BackendOptions {
    private final String backend;
    private final Map<String, JsonNode> given;

    BackendOptions(String backend, Map<String, JsonNode> given, List<String> known) {
        this.backend = backend;
        this.given = given;
        TreeSet<String> unknown = new TreeSet<>(given.keySet());
        unknown.removeAll(known);
        if (!unknown.isEmpty()) {
            List<String> q = new ArrayList<>();
            unknown.forEach(k -> q.add(Py.repr(k)));
            String k = known.isEmpty() ? "none" : String.join(", ", new TreeSet<>(known));
            throw new ConfigError("backend_options: backend " + Py.repr(backend) + " has no option "
                    + String.join(", ", q) + "; its options: " + k);
        }
    }

    private String prefix(String name) {
        return "backend_options: backend " + Py.repr(backend) + ": option " + Py.repr(name);
    }

    long integer(String name, Long dflt, boolean nonNegative) {
        JsonNode v = given.get(name);
        if (v == null) {
            if (dflt == null) {
                throw new ConfigError(prefix(name) + " is required");
            }
            return dflt;
        }
        long x;
        if (v.isIntegralNumber()) {
            x = v.asLong();
        } else if (v.isFloatingPointNumber() && v.asDouble() == Math.rint(v.asDouble())) {
            x = (long) v.asDouble();
        } else if (v.isTextual()) {
            try {
                x = Long.parseLong(v.asText().trim());
            } catch (NumberFormatException e) {
                throw new ConfigError(prefix(name) + ": not an integer: " + v);
            }
        } else {
            throw new ConfigError(prefix(name) + ": not an integer: " + v);
        }
        if (nonNegative && x < 0) {
            throw new ConfigError(prefix(name) + " must be >= 0, got " + x);
        }
        return x;
    }

    double number(String name, Double dflt, boolean nonNegative) {
        JsonNode v = given.get(name);
        if (v == null) {
            if (dflt == null) {
                throw new ConfigError(prefix(name) + " is required");
            }
            return dflt;
        }
        double x;
        if (v.isNumber()) {
            x = v.asDouble();
        } else if (v.isTextual()) {
            try {
                x = Double.parseDouble(v.asText().trim());
            } catch (NumberFormatException e) {
                throw new ConfigError(prefix(name) + ": not a float: " + v);
            }
        } else {
            throw new ConfigError(prefix(name) + ": not a float: " + v);
        }
        if (nonNegative && x < 0) {
            throw new ConfigError(prefix(name) + " must be >= 0, got " + x);
        }
        return x;
    }

    String choice(String name, String dflt, List<String> choices) {
        JsonNode v = given.get(name);
        String x = v == null ? dflt : v.asText();
        if (choices != null && !choices.contains(x)) {
            List<String> q = new ArrayList<>();
            choices.forEach(c -> q.add(Py.repr(c)));
            throw new ConfigError(prefix(name) + " must be one of " + String.join(", ", q) + ", got " + Py.repr(x));
        }
        return x;
    }
}
