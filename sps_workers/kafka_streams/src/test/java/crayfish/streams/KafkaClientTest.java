package crayfish.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Map;
import java.util.Properties;
import org.junit.jupiter.api.Test;

/** The cluster's client properties: passed in CRAYFISH_KAFKA_CLIENT, merged into every client. */
class KafkaClientTest {
    static final String BASE = "{\"bootstrap\":\"h:1\",\"input_topic\":\"i\",\"output_topic\":\"o\","
            + "\"dead_letter_topic\":\"d\",\"consumer_group\":\"g\",\"model\":\"ffnn\"";

    @Test
    void newSettingsKeysAreAccepted() {
        Settings s = Settings.load(BASE + ",\"kafka_client\":{\"properties\":{\"sasl.password\":\"${env:PW}\"},"
                + "\"properties_file\":null},\"start_offsets\":{\"0\":12,\"1\":7}}", Map.of());
        assertTrue(s.kafkaClient.isEmpty());
        assertEquals("g", s.consumerGroup);
    }

    @Test
    void clientPropertiesComeFromTheEnvironmentAndWinOverTheDefaults() {
        String jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p\";";
        String json = "{\"security.protocol\":\"SASL_SSL\",\"sasl.mechanism\":\"PLAIN\",\"sasl.jaas.config\":"
                + new com.fasterxml.jackson.databind.ObjectMapper().valueToTree(jaas) + ",\"fetch.max.wait.ms\":\"50\"}";
        Settings s = Settings.load(BASE + ",\"engine_options\":{\"streams_config\":{\"security.protocol\":\"SSL\"}}}",
                Map.of(Settings.KAFKA_CLIENT_ENV, json));
        assertEquals(jaas, s.kafkaClient.get("sasl.jaas.config"));
        Properties p = Main.properties(s, Path.of("/tmp/x"));
        assertEquals(jaas, p.get("sasl.jaas.config"));
        assertEquals("PLAIN", p.get("sasl.mechanism"));
        assertEquals("50", p.get("fetch.max.wait.ms"));
        assertNull(p.get("consumer.fetch.max.wait.ms"));         // the default yields to the cluster's
        assertEquals("SSL", p.get("security.protocol"));          // streams_config is applied last
        assertEquals(0, p.get("producer.linger.ms"));
    }

    @Test
    void badClientPropertiesFailWithoutQuotingThem() {
        ConfigError e = assertThrows(ConfigError.class,
                () -> Settings.kafkaClient("{\"sasl.jaas.config\": secret-not-json"));
        assertEquals("CRAYFISH_KAFKA_CLIENT: expected a JSON object of Kafka client properties", e.getMessage());
        assertFalse(e.getMessage().contains("secret"));
        assertEquals("CRAYFISH_KAFKA_CLIENT.x: expected a string value",
                assertThrows(ConfigError.class, () -> Settings.kafkaClient("{\"x\": 1}")).getMessage());
        assertTrue(Settings.kafkaClient(null).isEmpty());
    }
}
