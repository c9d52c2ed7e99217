"""Engine conformance: what every adapter must do, checked against the real broker.

One suite for every kind of adapter: a registered engine, any program started as the engine
(``engine: command``) and a pipeline that already runs (``engine: external``, topics named by the
user). ``tests/integration/sps_workers/test_engines.py`` runs it on every registered engine;
``crayfish conformance`` runs it on any adapter and prints a pass/fail table (docs/adapters.md).

- :mod:`.adapters`: how an adapter under test is started on fresh topics (or found on its own);
- :mod:`.checks`: the checks, each an assertion that can fail with a readable reason;
- :mod:`.suite`: runs the checks that apply to an adapter and collects one result per check.
"""
