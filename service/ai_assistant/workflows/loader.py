"""Workflows from `<config dir>/workflows/*.yaml`, validated at start: one bad document stops the service with its
file and node named (as a bad connectors.yaml does), rather than failing a user's message later."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from .errors import WorkflowError
from .schema import Workflow, parse

FOLDER = "workflows"


def workflow_files(config_dir: Path) -> list[Path]:
    folder = config_dir / FOLDER
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_file(path: Path, env: Mapping[str, str] | None = None) -> Workflow:
    file = f"{FOLDER}/{path.name}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise WorkflowError(file, "", f"not valid YAML{where}") from None
    except OSError as exc:
        raise WorkflowError(file, "", f"cannot be read: {exc.strerror}") from None
    return parse(data, file, env)


def load_workflows(config_dir: Path, env: Mapping[str, str] | None = None) -> list[Workflow]:
    """Every workflow, in file-name order (the order their triggers are tried in). None: today's default answer."""
    flows: list[Workflow] = []
    seen: dict[str, str] = {}
    for path in workflow_files(config_dir):
        flow = load_file(path, env)
        if flow.id in seen:
            raise WorkflowError(f"{FOLDER}/{path.name}", "id", f"{flow.id!r} is also the id in {seen[flow.id]}")
        seen[flow.id] = f"{FOLDER}/{path.name}"
        flows.append(flow)
    return flows
