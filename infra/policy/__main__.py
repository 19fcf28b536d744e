"""The policy pack's entry point; the rules live in rules.py so tests can run them without the Pulumi engine."""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rules import POLICIES  # type: ignore[import-not-found]  # the pack directory, put on sys.path above

PolicyPack(name="ai-assistant-security", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
