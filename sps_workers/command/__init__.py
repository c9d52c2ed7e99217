"""``engine: command``: any program, in any language, started and measured as the engine.

See ``__main__`` for what the program is given and how it is stopped, ``options`` for its
``engine_options``, and docs/adapters.md for the contract an adapter honours.
"""
