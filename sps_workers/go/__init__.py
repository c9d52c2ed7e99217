"""Go engine (native, same crayfish.v1 contract): see ``__main__`` for how it maps to Kafka, its
engine_options and how it scales out; ``build`` builds the binary; README.md."""
