package crayfish.streams;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;

/**
 * The scoring processor and its per-thread state. Kafka Streams runs one processor per task
 * (input partition); every task of stream thread N shares that thread's instance: one Operator
 * (one ORT session or one gRPC channel), facts.worker_id = "&lt;worker_id&gt;-&lt;N-1&gt;".
 */
final class Worker implements AutoCloseable {
    static final String OUTPUT = "output";
    static final String DEAD_LETTERS = "dead-letters";
    private static final Pattern THREAD = Pattern.compile("-StreamThread-(\\d+)$");

    final Settings settings;
    final ModelSpec spec;
    final Tracing tracing;
    private final Map<Integer, Instance> instances = new ConcurrentHashMap<>();

    /** One parallel task's scoring state (its scorer or client is not shared with other threads). */
    static final class Instance implements AutoCloseable {
        final String workerId;
        final Operator op;
        private final AutoCloseable resource;

        Instance(Settings s, ModelSpec spec, int index) {
            workerId = s.workerId + "-" + index;
            if (s.external == null) {
                Scorer scorer = Scorers.create(s, spec);
                op = new Operator(spec, workerId, scorer);
                resource = scorer;
                op.warmup(s.warmupMs);
            } else {
                ScoringClient client = new ScoringClient(s.external, s.model);
                op = new Operator(spec, workerId, client, s.external.retries, s.external.backoffS);
                resource = client;
            }
        }

        @Override
        public void close() {
            try {
                resource.close();
            } catch (Exception e) {
                // shutting down
            }
        }
    }

    Worker(Settings settings, Tracing tracing) {
        this.settings = settings;
        this.spec = ModelSpec.load(settings.modelsRoot(), settings.model);
        this.tracing = tracing;
        // Fail fast (bad backend options, missing model) before joining the group.
        for (int i = 0; i < settings.parallelism; i++) {
            instances.put(i, new Instance(settings, spec, i));
        }
    }

    /** The instance of the calling stream thread ("...-StreamThread-N" -> index N-1). */
    Instance current() {
        Matcher m = THREAD.matcher(Thread.currentThread().getName());
        int index = m.find() ? Integer.parseInt(m.group(1)) - 1 : 0;
        return instances.computeIfAbsent(index, i -> new Instance(settings, spec, i));
    }

    Processor<byte[], byte[], byte[], byte[]> newProcessor() {
        return new ScoringProcessor();
    }

    final class ScoringProcessor implements Processor<byte[], byte[], byte[], byte[]> {
        private ProcessorContext<byte[], byte[]> ctx;
        private Instance inst;

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            ctx = context;
            inst = current();
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            RecordMetadata md = ctx.recordMetadata().orElse(null);
            String topic = md == null ? settings.inputTopic : md.topic();
            int partition = md == null ? -1 : md.partition();
            long offset = md == null ? -1 : md.offset();
            Operator.Result res = inst.op.process(r.value(), r.timestamp(), topic, partition, offset);
            if (res.value() == null) {
                ctx.forward(new Record<>(r.key(), res.deadLetter(), r.timestamp(), new RecordHeaders()), DEAD_LETTERS);
                return;
            }
            Headers out = new RecordHeaders();
            if (tracing.enabled() && res.timing() != null && Tracing.sampled(r.headers())) {
                out = tracing.recordWorker(r.headers(), topic, partition, offset, res.timing(), settings.outputTopic);
            }
            ctx.forward(new Record<>(r.key(), res.value(), r.timestamp(), out), OUTPUT);
        }
    }

    @Override
    public void close() {
        instances.values().forEach(Instance::close);
        instances.clear();
    }
}
