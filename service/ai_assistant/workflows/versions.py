"""Saving workflow documents from the console: validated, written atomically, the previous file kept for roll-back.

`<config dir>/workflows/<id>.yaml` is the live document (the loader reads it at start); each save first copies the file
it replaces to `workflows/versions/<id>.v<N>.yaml` (N counts up per id). The loader only globs the folder itself, so
kept versions are never loaded. Documents are written in one canonical form (the validated model dumped without
defaults, keys in schema order), so loading a saved file and saving it again without edits writes the same bytes.
Comments in a hand-written file are not kept by a save from the console; the kept version still has them."""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import WorkflowError
from .loader import FOLDER, workflow_files
from .nodes import Services
from .schema import Workflow, parse

VERSIONS = "versions"
MAX_VERSIONS = 50  # older kept versions beyond this many per id are deleted at save
_VERSION = re.compile(r"^(?P<id>[a-z][a-z0-9_-]{0,63})\.v(?P<n>\d+)\.yaml$")


def document(flow: Workflow) -> dict[str, Any]:
    """The document as the editor and the saved file have it: defaults left out, kind and id on every node."""
    return flow.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {"nodes": [
        node.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {"kind": node.kind, "id": node.id}
        for node in flow.nodes
    ]}  # fmt: skip


def canonical(flow: Workflow) -> str:
    return yaml.safe_dump(document(flow), sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)


def parse_text(text: str, file: str = "workflow", env: Mapping[str, str] | None = None) -> Workflow:
    """A document given as YAML (JSON is YAML too), validated as at start; WorkflowError names the node."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise WorkflowError(file, "", "not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    return parse(data, file, env)


@dataclass(frozen=True)
class Saved:
    id: str
    path: Path
    kept: int | None  # the version number the replaced file was kept as; None for a new workflow
    text: str


class WorkflowFiles:
    """The workflows folder of a config directory, as the console edits it. One lock per folder: two admins saving
    at once each keep the other's file as a version instead of losing it."""

    def __init__(self, config_dir: Path, services: Services | None = None) -> None:
        self.folder = config_dir / FOLDER
        self.versions_folder = self.folder / VERSIONS
        self.services = services or Services()  # the dry run's: no channel, so it posts nothing
        self._lock = threading.Lock()

    def path(self, workflow_id: str) -> Path:
        return self.folder / f"{workflow_id}.yaml"

    def rows(self, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every live file with its id, version, enabled flag and kept versions; a file that does not validate is
        listed with its problem (the service would refuse to start with it)."""
        rows: list[dict[str, Any]] = []
        for path in workflow_files(self.folder.parent):
            row: dict[str, Any] = {"file": path.name, "id": path.stem, "problem": None}
            try:
                flow = parse_text(path.read_text(encoding="utf-8"), f"{FOLDER}/{path.name}", env)
                row |= {"id": flow.id, "version": flow.version, "name": flow.name, "enabled": flow.enabled}
            except WorkflowError as exc:
                row["problem"] = str(exc)
            except OSError as exc:
                row["problem"] = f"{FOLDER}/{path.name}: cannot be read: {exc.strerror}"
            row["versions"] = self.versions(row["id"])
            rows.append(row)
        return rows

    def read(self, workflow_id: str) -> str | None:
        path = self.path(workflow_id)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def versions(self, workflow_id: str) -> list[int]:
        if not self.versions_folder.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in self.versions_folder.iterdir())
        return sorted(int(m["n"]) for m in found if m and m["id"] == workflow_id)

    def read_version(self, workflow_id: str, number: int) -> str | None:
        path = self.versions_folder / f"{workflow_id}.v{number}.yaml"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def save(self, flow: Workflow) -> Saved:
        """Write the validated flow as <id>.yaml, keeping the file it replaces; refuses an id another file holds."""
        text = canonical(flow)
        target = self.path(flow.id)
        with self._lock:
            for other in workflow_files(self.folder.parent):
                if other.name != target.name and _id_of(other) == flow.id:
                    raise WorkflowError(f"{FOLDER}/{target.name}", "id", f"{flow.id!r} is also the id in {other.name}")
            self.folder.mkdir(parents=True, exist_ok=True)
            kept = None
            if target.is_file():
                self.versions_folder.mkdir(exist_ok=True)
                kept = (self.versions(flow.id) or [0])[-1] + 1
                _write(self.versions_folder / f"{flow.id}.v{kept}.yaml", target.read_bytes())
                for old in self.versions(flow.id)[:-MAX_VERSIONS]:
                    (self.versions_folder / f"{flow.id}.v{old}.yaml").unlink(missing_ok=True)
            _write(target, text.encode("utf-8"))
        return Saved(flow.id, target, kept, text)

    def rollback(self, workflow_id: str, number: int, env: Mapping[str, str] | None = None) -> Saved:
        """Make kept version `number` live again (validated first); the file it replaces is kept as a new version."""
        text = self.read_version(workflow_id, number)
        file = f"{FOLDER}/{VERSIONS}/{workflow_id}.v{number}.yaml"
        if text is None:
            raise WorkflowError(file, "version", f"no kept version {number} of {workflow_id}")
        flow = parse_text(text, file, env)
        if flow.id != workflow_id:
            raise WorkflowError(file, "id", f"is {flow.id!r}, not {workflow_id!r}")
        return self.save(flow)

    def set_enabled(self, workflow_id: str, enabled: bool, env: Mapping[str, str] | None = None) -> Saved:
        """Enable or disable through the document's own `enabled` field (the runner skips a disabled flow)."""
        text = self.read(workflow_id)
        file = f"{FOLDER}/{workflow_id}.yaml"
        if text is None:
            raise WorkflowError(file, "id", f"no workflow {workflow_id}")
        flow = parse_text(text, file, env)
        return self.save(flow.model_copy(update={"enabled": enabled}))


def _id_of(path: Path) -> object:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data.get("id") if isinstance(data, dict) else None


def _write(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename: a reader sees the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
