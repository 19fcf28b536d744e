"""docs/hardening.md's control table, generated from docs/hardening-controls.yml and the roles' task tags.

    .venv/bin/python -m tests.roles.hardening_map --write   # regenerate between the markers
tests/roles/test_hardening_map.py fails when the map is out of date or names a tag, switch or test that does not
exist."""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from airgap.apt import flat_tasks

REPO = Path(__file__).resolve().parents[2]
CONTROLS = REPO / "docs/hardening-controls.yml"
DOC = REPO / "docs/hardening.md"
BEGIN, END = "<!-- BEGIN CONTROLS (generated from docs/hardening-controls.yml) -->", "<!-- END CONTROLS -->"
LYNIS_BEGIN, LYNIS_END = "<!-- BEGIN LYNIS (generated from docs/hardening-controls.yml) -->", "<!-- END LYNIS -->"


def controls() -> list[dict[str, Any]]:
    data: dict[str, Any] = yaml.safe_load(CONTROLS.read_text(encoding="utf-8"))
    return list(data["controls"])


def lynis() -> dict[str, list[dict[str, Any]]]:
    """The lynis section: the VM suite profile's settings and the findings that remain, each with why."""
    data: dict[str, Any] = yaml.safe_load(CONTROLS.read_text(encoding="utf-8"))
    return {"profile": list(data["lynis"]["profile"] or []), "findings": list(data["lynis"]["findings"] or [])}


def tagged_tasks() -> dict[str, list[str]]:
    """Tag -> ['role/tasks/file.yml: task name', ...] over every role's task files."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted((REPO / "roles").glob("*/tasks/*.yml")):
        for task in flat_tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            tags = task.get("tags") or []
            for tag in [tags] if isinstance(tags, str) else tags:
                found[str(tag)].append(f"{path.relative_to(REPO / 'roles')}: {task.get('name', '?')}")
    return found


def test_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "tests/roles").glob("test_*.py"):
        names |= set(re.findall(r"^def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M))
    return names


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table() -> str:
    tasks = tagged_tasks()
    rows = [
        "| Control | Title | Implemented by (role/tasks: task) | Switched off by | Proven by (tests/roles) | dev-sec |",
        "|---|---|---|---|---|---|",
    ]
    for c in controls():
        if c.get("role"):
            impl = "<br>".join(_cell(t.split(" | ")[0]) for t in tasks.get(c["id"], [])) or "**missing**"
            switch = f"`{c['switch']}`" if c.get("switch") else "always on"
            test = f"`{c['test']}`" if c.get("test") else ""
            if c.get("default_off"):
                test = (test + " " if test else "") + f"(default off: {_cell(c['default_off'])})"
            if c.get("untested"):  # why no VM test can prove it (the one-host VM cannot be in that state)
                test = (test + " " if test else "") + f"(no VM test: {_cell(c['untested'])})"
        else:
            note = _cell(c.get("na") or c.get("deferred"))
            if c.get("na"):
                impl = f"not applicable: {note}"
            elif note.startswith("partly built"):  # a deferred control whose note says how far it is
                impl = note
            else:
                impl = f"not built: {note}"
            switch, test = "", ""
        devsec = f"`{c['devsec']}`" if c.get("devsec") else ""
        rows.append(f"| `{c['id']}` | {_cell(c['title'])} | {impl} | {switch} | {test} | {devsec} |")
    return "\n".join(rows)


def lynis_tables() -> str:
    data = lynis()
    rows = ["| Setting of tests/roles/vm/lynis-vm-suite.prf | Why |", "|---|---|"]
    rows += [f"| `{_cell(p['setting'])}` | {_cell(p['why'])} |" for p in data["profile"]]
    rows += ["", "| lynis test | Kind | Finding | Why it stays |", "|---|---|---|---|"]
    rows += [
        f"| `{_cell(f['id'])}` | {_cell(f['kind'])} | {_cell(f['finding'])} | {_cell(f['why'])} |"
        for f in data["findings"]
    ]
    return "\n".join(rows)


def _between(text: str, begin: str, end: str, body: str) -> str:
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(text: str) -> str:
    return _between(_between(text, BEGIN, END, table()), LYNIS_BEGIN, LYNIS_END, lynis_tables())


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if "--write" in argv:
        DOC.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        print("docs/hardening.md is out of date: run .venv/bin/python -m tests.roles.hardening_map --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
