"""Workflows as data: YAML documents in `config/workflows/` (schema.py), loaded and refused at start (loader.py), run
by the pipeline with a checkpoint per node (runner.py). docs/workflows.md describes the format; ADR 0106 says why."""
