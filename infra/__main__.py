"""Pulumi entry point (Pulumi.yaml: main: infra/). Composition lives in infra/program.py."""

import sys
from pathlib import Path

# Pulumi runs this file with infra/ as the program directory; the package is imported from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
