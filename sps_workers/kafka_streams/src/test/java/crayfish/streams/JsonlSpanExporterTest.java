package crayfish.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Spans of one sampled batch land in the JSON-lines file observability.hops reads. */
class JsonlSpanExporterTest {
    @Test
    void workerSpansAreWrittenWithSpanToDictFields(@TempDir Path dir) throws Exception {
        Map<String, String> env = new HashMap<>();
        env.put("CRAYFISH_SPANS_DIR", dir.toString());
        env.put("OTEL_TRACES_SAMPLER", "parentbased_always_off");
        env.put("OTEL_SERVICE_NAME", "kafka-streams-worker");
        Tracing tracing = Tracing.create("ignored", env);
        assertTrue(tracing.enabled());
        String trace = "0af7651916cd43dd8448eb211c80319c";
        String parent = "b7ad6b7169203331";
        Headers in = new RecordHeaders();
        in.add("traceparent", ("00-" + trace + "-" + parent + "-01").getBytes());
        long t0 = Operator.wallNs();
        Headers out = tracing.recordWorker(in, "in-topic", 1, 9,
                new Operator.Timing("b1", t0, 1000, 2000, 3000, t0 + 10000), "out-topic");
        String tp = new String(out.lastHeader("traceparent").value());
        String[] parts = tp.split("-");
        assertEquals(trace, parts[1]);
        assertNotEquals(parent, parts[2]);
        assertEquals("01", parts[3]);
        tracing.close();

        Path file = dir.resolve("spans").resolve("kafka-streams-worker-" + ProcessHandle.current().pid() + ".jsonl");
        List<JsonNode> spans = new ArrayList<>();
        for (String line : Files.readAllLines(file)) {
            spans.add(new ObjectMapper().readTree(line));
        }
        assertEquals(5, spans.size());
        Map<String, JsonNode> byName = new HashMap<>();
        spans.forEach(s -> byName.put(s.get("name").asText(), s));
        JsonNode process = byName.get("process in-topic");
        assertEquals(parent, process.get("parent_id").asText());
        assertEquals("CONSUMER", process.get("kind").asText());
        assertEquals("UNSET", process.get("status").asText());
        assertEquals(t0, process.get("start_ns").asLong());
        assertEquals("1", process.get("attributes").get("messaging.destination.partition.id").asText());
        assertEquals(9, process.get("attributes").get("messaging.kafka.offset").asLong());
        assertEquals("kafka-streams-worker", process.get("service").asText());
        JsonNode score = byName.get("crayfish.score");
        assertEquals("score", score.get("attributes").get("crayfish.hop").asText());
        assertEquals(process.get("span_id").asText(), score.get("parent_id").asText());
        assertEquals(2000, score.get("end_ns").asLong() - score.get("start_ns").asLong());
        assertEquals(parts[2], byName.get("send out-topic").get("span_id").asText());
        List<String> fields = new ArrayList<>();
        process.fieldNames().forEachRemaining(fields::add);
        assertEquals(List.of("trace_id", "span_id", "parent_id", "name", "kind", "start_ns", "end_ns", "status",
                "attributes", "links", "service"), fields);
        assertTrue(byName.containsKey("crayfish.decode") && byName.containsKey("crayfish.encode"));
    }

    @Test
    void offWithoutADestination() {
        assertTrue(!Tracing.create("x", Map.of()).enabled());
        assertTrue(!Tracing.create("x", Map.of("CRAYFISH_SPANS_DIR", "/tmp", "OTEL_SDK_DISABLED", "true")).enabled());
        assertNull(Tracing.create("x", Map.of("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")).spanFile);
    }
}
