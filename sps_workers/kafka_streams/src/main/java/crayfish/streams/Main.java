package crayfish.streams;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.Comparator;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;

/**
 * Entry point: {@code java -jar crayfish-kafka-streams.jar --config <json | @file> [--validate]}.
 * See sps_workers/kafka_streams/__main__.py for how it maps to Kafka Streams.
 */
public final class Main {
    private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

    private final Settings settings;
    private final Tracing tracing;
    private final Worker worker;
    private final Path stateDir;
    private final KafkaStreams streams;
    private final CountDownLatch finished = new CountDownLatch(1);
    private volatile boolean failed;
    private volatile int exitCode;
    private boolean closed;

    public static void main(String[] args) {
        configureLogging();
        String config = null;
        boolean validate = false;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--config") && i + 1 < args.length) {
                config = args[++i];
            } else if (args[i].equals("--validate")) {
                validate = true;
            } else {
                usage("unknown argument " + args[i]);
            }
        }
        if (config == null) {
            usage("--config is required");
        }
        Main main;
        try {
            Settings settings = Settings.load(config);
            if (validate) {
                new Worker(settings, Tracing.create("validate", java.util.Map.of())).close();
                System.out.println("ok");
                return;
            }
            main = new Main(settings);
        } catch (ConfigError e) {
            System.err.println("kafka-streams worker: " + e.getMessage());
            System.exit(2);
            return;
        }
        main.run();
    }

    private static void usage(String why) {
        System.err.println("kafka-streams worker: " + why
                + "\nusage: java -jar crayfish-kafka-streams.jar --config <WorkerSettings JSON | @file> [--validate]");
        System.exit(2);
    }

    private static void configureLogging() {
        String level = System.getenv().getOrDefault("CRAYFISH_LOG_LEVEL", "WARNING").trim().toUpperCase(Locale.ROOT);
        String slf = switch (level) {
            case "DEBUG" -> "debug";
            case "INFO" -> "info";
            case "ERROR", "CRITICAL" -> "error";
            default -> "warn";
        };
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", slf);
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
        System.setProperty("org.slf4j.simpleLogger.dateTimeFormat", "yyyy-MM-dd HH:mm:ss,SSS");
    }

    Main(Settings s) {
        settings = s;
        tracing = Tracing.create(s.workerId + "-worker");
        worker = new Worker(s, tracing);
        try {
            stateDir = Files.createTempDirectory("crayfish-kstreams-");
        } catch (IOException e) {
            throw new IllegalStateException("cannot create a state directory: " + e.getMessage(), e);
        }
        streams = new KafkaStreams(topology(s, worker), properties(s, stateDir));
    }

    static Topology topology(Settings s, Worker worker) {
        Topology t = new Topology();
        t.addSource("input", new ByteArrayDeserializer(), new ByteArrayDeserializer(), s.inputTopic);
        t.addProcessor("score", worker::newProcessor, "input");
        t.addSink(Worker.OUTPUT, s.outputTopic, new ByteArraySerializer(), new ByteArraySerializer(), "score");
        t.addSink(Worker.DEAD_LETTERS, s.deadLetterTopic, new ByteArraySerializer(), new ByteArraySerializer(),
                "score");
        return t;
    }

    /** Kafka Streams settings: the baseline worker's latency choices (no linger, short fetch wait,
     *  short sessions, 64 MiB messages), at-least-once, the cluster's client properties
     *  ({@link Settings#kafkaClient}) over those, engine_options.streams_config last. */
    static Properties properties(Settings s, Path stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, s.consumerGroup);
        p.put(StreamsConfig.CLIENT_ID_CONFIG, s.workerId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, s.bootstrap);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, s.parallelism);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, s.commitIntervalMs);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // OS-sized (auto-tuned) socket buffers, as librdkafka's: Kafka Streams' 32 KiB receive buffer
        // throttles multi-MB batches.
        p.put(StreamsConfig.RECEIVE_BUFFER_CONFIG, -1);
        p.put(StreamsConfig.SEND_BUFFER_CONFIG, -1);
        p.put(StreamsConfig.ENABLE_METRICS_PUSH_CONFIG, false);
        if (s.pollMs != null) {
            p.put(StreamsConfig.POLL_MS_CONFIG, s.pollMs);
        }
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), s.maxPollRecords);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG), 5);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 10000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_BYTES_CONFIG), MAX_MESSAGE_BYTES);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG), MAX_MESSAGE_BYTES);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 0);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.ACKS_CONFIG), "all");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG), true);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "none");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.MAX_REQUEST_SIZE_CONFIG), MAX_MESSAGE_BYTES + (1 << 20));
        p.put(StreamsConfig.producerPrefix(ProducerConfig.BUFFER_MEMORY_CONFIG), 4L * MAX_MESSAGE_BYTES);
        // The cluster's client properties (security: SASL, TLS; any other client setting) for every
        // client of Kafka Streams (consumers, producer, admin), over the defaults above.
        for (Map.Entry<String, String> e : s.kafkaClient.entrySet()) {
            p.remove(StreamsConfig.consumerPrefix(e.getKey()));
            p.remove(StreamsConfig.producerPrefix(e.getKey()));
            p.put(e.getKey(), e.getValue());
        }
        p.putAll(s.streamsConfig);
        return p;
    }

    void run() {
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("kafka-streams worker: stream thread failed: " + e);
            e.printStackTrace();
            failed = true;
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                markReady();
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                finished.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            shutdown();
            Runtime.getRuntime().halt(exitCode);
        }, "crayfish-shutdown"));
        System.err.printf("kafka-streams worker: application.id=%s threads=%d %s model=%s input=%s%n",
                settings.consumerGroup, settings.parallelism,
                settings.external == null ? "backend=" + settings.backend : "server=" + settings.external.target,
                settings.model, settings.inputTopic);
        streams.start();
        try {
            finished.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        exitCode = failed ? 1 : 0;
        System.exit(exitCode);
    }

    /** Close Kafka Streams (flush the producer, commit), then the scorers and the tracer (spans
     *  flushed). Idempotent; runs in the shutdown hook on SIGTERM. */
    private synchronized void shutdown() {
        if (closed) {
            return;
        }
        closed = true;
        boolean clean = streams.close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(15)));
        if (!clean) {
            System.err.println("kafka-streams worker: Kafka Streams did not close within 15 s");
            exitCode = 1;
        }
        worker.close();
        tracing.close();
        deleteTree(stateDir);
    }

    private void markReady() {
        if (settings.readyFile == null) {
            return;
        }
        Path path = Path.of(settings.readyFile);
        if (Files.exists(path)) {
            return;
        }
        try {
            Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
            Files.writeString(tmp, "ready\n");
            Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            System.err.println("kafka-streams worker: cannot write the ready file " + path + ": " + e.getMessage());
        }
    }

    private static void deleteTree(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            // a temp directory: nothing more to do
        }
    }
}
