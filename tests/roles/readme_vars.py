"""The Variables section of each role README, generated from meta/argument_specs.yml (the contract).

    .venv/bin/python -m tests.roles.readme_vars --write   # regenerate between the markers
tests/roles/test_static.py fails when a README is out of date."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
BEGIN, END = "<!-- BEGIN VARIABLES (generated from meta/argument_specs.yml) -->", "<!-- END VARIABLES -->"


def _cell(value: Any) -> str:
    if isinstance(value, bool | int | float):
        text = str(value).lower()
    elif isinstance(value, str):
        text = value
    else:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.replace("|", "\\|").replace("\n", " ")


def table(role: str) -> str:
    spec = yaml.safe_load((ROLES_DIR / role / "meta/argument_specs.yml").read_text(encoding="utf-8"))
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, opt in spec["argument_specs"]["main"]["options"].items():
        if "default" in opt:
            default = f"`{_cell(opt['default'])}`" if opt["default"] != "" else '`""`'
        else:
            default = "**required**" if opt.get("required") else "*none (secret or optional)*"
        kind = opt["type"] + (f" of {opt['elements']}" if "elements" in opt else "")
        desc = " ".join(opt["description"]) if isinstance(opt["description"], list) else opt["description"]
        if opt.get("no_log"):
            desc += " *(secret: no_log)*"
        if "choices" in opt:
            desc += " One of: " + ", ".join(f"`{c}`" for c in opt["choices"]) + "."
        rows.append(f"| `{name}` | {kind} | {default} | {_cell(desc.strip())} |")
    return "\n".join([BEGIN, *rows, END])


def render(role: str, readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + table(role) + tail


def main() -> int:
    stale = []
    for readme in sorted(ROLES_DIR.glob("*/README.md")):
        role = readme.parent.name
        if not (readme.parent / "meta/argument_specs.yml").exists() or BEGIN not in readme.read_text():
            continue
        text = readme.read_text(encoding="utf-8")
        new = render(role, text)
        if new != text:
            stale.append(role)
            if "--write" in sys.argv:
                readme.write_text(new, encoding="utf-8")
    print("regenerated" if "--write" in sys.argv else "stale", *stale)
    return 1 if stale and "--write" not in sys.argv else 0


if __name__ == "__main__":
    raise SystemExit(main())
