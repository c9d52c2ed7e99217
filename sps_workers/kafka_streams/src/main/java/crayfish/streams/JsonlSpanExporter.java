package crayfish.streams;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.opentelemetry.sdk.common.CompletableResultCode;
import io.opentelemetry.sdk.trace.data.LinkData;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.opentelemetry.sdk.trace.export.SpanExporter;
import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The span files of observability.spanlog, for the JVM: one JSON object per finished span, one a
 * line, in {@code <dir>/<service>-<pid>.jsonl}, with exactly the fields of a span line (trace_id,
 * span_id, parent_id, name, kind, start_ns, end_ns, status, attributes, links, service), which
 * observability.hops reads.
 */
final class JsonlSpanExporter implements SpanExporter {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path path;
    private final String service;
    private BufferedWriter out;

    JsonlSpanExporter(Path directory, String service) {
        this.service = service;
        this.path = directory.resolve(safe(service) + "-" + ProcessHandle.current().pid() + ".jsonl");
    }

    Path path() {
        return path;
    }

    static String safe(String name) {
        StringBuilder b = new StringBuilder();
        name.codePoints().forEach(c -> b.appendCodePoint(
                Character.isLetterOrDigit(c) || c == '-' || c == '_' || c == '.' ? c : '_'));
        return b.length() == 0 ? "service" : b.toString();
    }

    static Map<String, Object> toMap(SpanData s, String service) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("trace_id", s.getTraceId());
        m.put("span_id", s.getSpanId());
        m.put("parent_id", s.getParentSpanContext().isValid() ? s.getParentSpanId() : null);
        m.put("name", s.getName());
        m.put("kind", s.getKind().name());
        m.put("start_ns", s.getStartEpochNanos());
        m.put("end_ns", s.getEndEpochNanos());
        m.put("status", s.getStatus().getStatusCode().name());
        Map<String, Object> attrs = new LinkedHashMap<>();
        s.getAttributes().forEach((k, v) -> attrs.put(k.getKey(), v));
        m.put("attributes", attrs);
        List<Map<String, String>> links = new ArrayList<>();
        for (LinkData l : s.getLinks()) {
            Map<String, String> lm = new LinkedHashMap<>();
            lm.put("trace_id", l.getSpanContext().getTraceId());
            lm.put("span_id", l.getSpanContext().getSpanId());
            links.add(lm);
        }
        m.put("links", links);
        m.put("service", service);
        return m;
    }

    @Override
    public synchronized CompletableResultCode export(Collection<SpanData> spans) {
        try {
            if (out == null) {
                Files.createDirectories(path.getParent());
                out = Files.newBufferedWriter(path, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                        StandardOpenOption.APPEND);
            }
            for (SpanData s : spans) {
                out.write(JSON.writeValueAsString(toMap(s, service)));
                out.write('\n');
            }
            out.flush();
            return CompletableResultCode.ofSuccess();
        } catch (IOException e) {
            return CompletableResultCode.ofFailure();
        }
    }

    @Override
    public synchronized CompletableResultCode flush() {
        try {
            if (out != null) {
                out.flush();
            }
            return CompletableResultCode.ofSuccess();
        } catch (IOException e) {
            return CompletableResultCode.ofFailure();
        }
    }

    @Override
    public synchronized CompletableResultCode shutdown() {
        try {
            if (out != null) {
                out.close();
            }
            out = null;
            return CompletableResultCode.ofSuccess();
        } catch (IOException e) {
            return CompletableResultCode.ofFailure();
        }
    }
}
