package crayfish.streams;

/** A bad worker setting: the message names the field. */
public final class ConfigError extends RuntimeException {
    public ConfigError(String message) {
        super(message);
    }
}
