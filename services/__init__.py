"""Crayfish Mesh services: generator, collector, runner, analysis, broker helpers."""
