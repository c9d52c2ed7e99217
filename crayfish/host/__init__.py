"""Host primitives every deployable shares: where things live on this machine (:mod:`.paths`),
free ports (:mod:`.ports`), service processes — start, wait, stop a whole tree (:mod:`.procs`) —
and the per-deployable Python environments (:mod:`.envs`).

The bottom layer with the contracts (docs/architecture.md): it imports nothing of the project
above ``crayfish``.
"""
