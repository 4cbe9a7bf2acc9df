"""Orchestration: Dagster definitions for the loop, and the ``firstmile`` command. Thin: calls ml/, warehouse/,
streaming/. Nothing imports this package."""
