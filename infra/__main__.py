"""Pulumi entry point (Pulumi.yaml: main: infra/). Composition lives in infra/program.py."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Pulumi runs this directory as a script, which puts infra/ itself first on sys.path; its module names (config,
# inventory, ...) must not shadow other top-level modules, so the package is imported from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from infra.program import main  # noqa: E402

main()
