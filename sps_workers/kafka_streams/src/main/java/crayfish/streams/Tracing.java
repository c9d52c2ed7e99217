package crayfish.streams;

import io.opentelemetry.api.common.Attributes;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapGetter;
import io.opentelemetry.context.propagation.TextMapSetter;
import io.opentelemetry.sdk.OpenTelemetrySdk;
import io.opentelemetry.sdk.autoconfigure.AutoConfiguredOpenTelemetrySdk;
import io.opentelemetry.sdk.trace.export.BatchSpanProcessor;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;

/**
 * observability.wiring.BatchTracing (worker side) for the JVM, with the OpenTelemetry Java SDK.
 *
 * <p>On only when OTEL_SDK_DISABLED is not true and spans have somewhere to go: CRAYFISH_SPANS_DIR
 * (JSON lines in {@code <dir>/spans/<service>-<pid>.jsonl}) or an OTLP endpoint
 * (OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT; gRPC unless OTEL_EXPORTER_OTLP_PROTOCOL says otherwise).
 * The SDK reads the rest of OTEL_* itself: OTEL_TRACES_SAMPLER/_ARG (parentbased_* included),
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*. A batch is traced only when its input
 * carries a sampled W3C traceparent; its spans are recorded after the fact from the operator's own
 * stamps: "process &lt;topic&gt;" (CONSUMER, child of the incoming context) with crayfish.decode /
 * crayfish.score / crayfish.encode children and a "send &lt;out topic&gt;" PRODUCER span whose
 * context travels on in the output record's traceparent.
 */
final class Tracing implements AutoCloseable {
    static final String SPANS_DIR_ENV = "CRAYFISH_SPANS_DIR";
    static final String TRACEPARENT = "traceparent";
    private static final W3CTraceContextPropagator W3C = W3CTraceContextPropagator.getInstance();

    private final OpenTelemetrySdk sdk;
    private final Tracer tracer;
    final String service;
    final Path spanFile;

    private Tracing(OpenTelemetrySdk sdk, String service, Path spanFile) {
        this.sdk = sdk;
        this.tracer = sdk == null ? null : sdk.getTracer("crayfish");
        this.service = service;
        this.spanFile = spanFile;
    }

    boolean enabled() {
        return tracer != null;
    }

    static Tracing create(String defaultService) {
        return create(defaultService, System.getenv());
    }

    static Tracing create(String defaultService, Map<String, String> env) {
        String endpoint = firstNonEmpty(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                env.get("OTEL_EXPORTER_OTLP_ENDPOINT"));
        String spansDir = firstNonEmpty(env.get(SPANS_DIR_ENV));
        boolean disabled = "true".equalsIgnoreCase(String.valueOf(env.get("OTEL_SDK_DISABLED")).trim());
        String service = serviceName(defaultService, env);
        if (disabled || (endpoint == null && spansDir == null)) {
            return new Tracing(null, service, null);
        }
        String choice = String.valueOf(env.getOrDefault("OTEL_TRACES_EXPORTER", "")).trim().toLowerCase();
        boolean none = choice.equals("none");
        boolean otlp = !none && endpoint != null;
        Path file = !none && !otlp ? Path.of(spansDir, "spans") : null;
        JsonlSpanExporter jsonl = file == null ? null : new JsonlSpanExporter(file, service);
        Map<String, String> overrides = new HashMap<>();
        overrides.put("otel.traces.exporter", otlp ? "otlp" : "none");
        overrides.put("otel.metrics.exporter", "none");
        overrides.put("otel.logs.exporter", "none");
        overrides.put("otel.service.name", service);
        overrides.put("otel.propagators", "tracecontext");
        if (firstNonEmpty(env.get("OTEL_EXPORTER_OTLP_PROTOCOL"), env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")) == null) {
            overrides.put("otel.exporter.otlp.protocol", "grpc");
        }
        OpenTelemetrySdk sdk = AutoConfiguredOpenTelemetrySdk.builder()
                .disableShutdownHook()
                .addPropertiesCustomizer(cfg -> overrides)
                .addTracerProviderCustomizer((b, cfg) -> {
                    if (jsonl != null) {
                        b.addSpanProcessor(BatchSpanProcessor.builder(jsonl)
                                .setScheduleDelay(cfg.getDuration("otel.bsp.schedule.delay", Duration.ofSeconds(5)))
                                .setMaxQueueSize(cfg.getInt("otel.bsp.max.queue.size", 2048))
                                .setMaxExportBatchSize(cfg.getInt("otel.bsp.max.export.batch.size", 512))
                                .setExporterTimeout(cfg.getDuration("otel.bsp.export.timeout", Duration.ofSeconds(30)))
                                .build());
                    }
                    return b;
                })
                .build().getOpenTelemetrySdk();
        return new Tracing(sdk, service, jsonl == null ? null : jsonl.path());
    }

    /** observability.otel.service_name: OTEL_SERVICE_NAME, else service.name of OTEL_RESOURCE_ATTRIBUTES. */
    static String serviceName(String dflt, Map<String, String> env) {
        String n = firstNonEmpty(env.get("OTEL_SERVICE_NAME"));
        if (n != null) {
            return n;
        }
        String attrs = env.get("OTEL_RESOURCE_ATTRIBUTES");
        if (attrs != null) {
            for (String kv : attrs.split(",")) {
                int eq = kv.indexOf('=');
                if (eq > 0 && kv.substring(0, eq).trim().equals("service.name") && !kv.substring(eq + 1).isBlank()) {
                    return kv.substring(eq + 1).trim();
                }
            }
        }
        return dflt;
    }

    private static String firstNonEmpty(String... xs) {
        for (String x : xs) {
            if (x != null && !x.isEmpty()) {
                return x;
            }
        }
        return null;
    }

    /** observability.light.sampled_traceparent: a traceparent whose sampled flag is set. */
    static boolean sampled(Headers headers) {
        if (headers == null) {
            return false;
        }
        for (Header h : headers) {
            if (h.key().equals(TRACEPARENT) && h.value() != null && h.value().length > 0) {
                byte[] v = h.value();
                if (v.length < 2) {
                    return false;
                }
                int hi = Character.digit(v[v.length - 2], 16);
                int lo = Character.digit(v[v.length - 1], 16);
                return hi >= 0 && lo >= 0 && (lo & 1) == 1;
            }
        }
        return false;
    }

    private static final TextMapGetter<Headers> GETTER = new TextMapGetter<>() {
        @Override
        public Iterable<String> keys(Headers carrier) {
            List<String> ks = new ArrayList<>();
            carrier.forEach(h -> ks.add(h.key().toLowerCase()));
            return ks;
        }

        @Override
        public String get(Headers carrier, String key) {
            if (carrier == null) {
                return null;
            }
            for (Header h : carrier) {
                if (h.key().equalsIgnoreCase(key) && h.value() != null) {
                    return new String(h.value(), StandardCharsets.UTF_8);
                }
            }
            return null;
        }
    };

    private static final TextMapSetter<Headers> SETTER = (carrier, key, value) -> {
        carrier.remove(key);
        carrier.add(key, value.getBytes(StandardCharsets.UTF_8));
    };

    /** observability.wiring.BatchTracing.record_worker: the worker's spans of one sampled batch and
     *  the output headers carrying the trace on. */
    Headers recordWorker(Headers in, String topic, int partition, long offset, Operator.Timing t, String outTopic) {
        Context parentCtx = W3C.extract(Context.root(), in, GETTER);
        long received = t.receivedNs();
        Span process = tracer.spanBuilder("process " + topic).setParent(parentCtx).setSpanKind(SpanKind.CONSUMER)
                .setStartTimestamp(received, TimeUnit.NANOSECONDS)
                .setAllAttributes(Attributes.builder()
                        .put("messaging.system", "kafka").put("messaging.destination.name", topic)
                        .put("messaging.operation", "process").put("messaging.operation.type", "process")
                        .put("messaging.destination.partition.id", Integer.toString(partition))
                        .put("messaging.kafka.offset", offset).put("crayfish.batch_id", t.batchId()).build())
                .startSpan();
        Context parent = Context.root().with(process);
        long at = received;
        String[] hops = {"decode", "score", "encode"};
        long[] durs = {t.decodeNs(), t.inferenceNs(), t.encodeNs()};
        for (int i = 0; i < hops.length; i++) {
            Span child = tracer.spanBuilder("crayfish." + hops[i]).setParent(parent)
                    .setStartTimestamp(at, TimeUnit.NANOSECONDS)
                    .setAttribute("crayfish.hop", hops[i]).setAttribute("crayfish.batch_id", t.batchId())
                    .startSpan();
            child.end(at + durs[i], TimeUnit.NANOSECONDS);
            at += durs[i];
        }
        Span send = tracer.spanBuilder("send " + outTopic).setParent(parent).setSpanKind(SpanKind.PRODUCER)
                .setStartTimestamp(t.sendNs(), TimeUnit.NANOSECONDS)
                .setAllAttributes(Attributes.builder()
                        .put("messaging.system", "kafka").put("messaging.destination.name", outTopic)
                        .put("messaging.operation", "publish").put("messaging.operation.type", "send")
                        .put("crayfish.batch_id", t.batchId()).build())
                .startSpan();
        Headers out = new RecordHeaders();
        W3C.inject(Context.root().with(send), out, SETTER);
        send.end();
        process.end(t.sendNs(), TimeUnit.NANOSECONDS);
        return out;
    }

    @Override
    public void close() {
        if (sdk != null) {
            sdk.getSdkTracerProvider().forceFlush().join(10, TimeUnit.SECONDS);
            sdk.getSdkTracerProvider().shutdown().join(10, TimeUnit.SECONDS);
        }
    }
}
