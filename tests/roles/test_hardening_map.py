"""docs/hardening.md cannot rot: each control row names a real task tag, role option and test (issue 23)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.roles.hardening_map import DOC, LYNIS_BEGIN, controls, lynis, render, tagged_tasks
from tests.roles.hardening_map import test_names as defined_tests

REPO = Path(__file__).resolve().parents[2]
LYNIS_PROFILE = REPO / "tests/roles/vm/lynis-vm-suite.prf"


def _options(role: str) -> dict[str, object]:
    spec = yaml.safe_load((REPO / "roles" / role / "meta/argument_specs.yml").read_text(encoding="utf-8"))
    return dict(spec["argument_specs"]["main"]["options"])


def test_every_implemented_control_names_a_tagged_task_a_role_option_and_a_test() -> None:
    tasks, tests = tagged_tasks(), defined_tests()
    problems = []
    for c in controls():
        if not c.get("role"):
            if not (c.get("na") or c.get("deferred")):
                problems.append(f"{c['id']}: no role and no na/deferred reason")
            continue
        if not any(t.startswith(f"{c['role']}/") for t in tasks.get(c["id"], [])):
            problems.append(f"{c['id']}: no task in roles/{c['role']} is tagged {c['id']}")
        if c.get("switch"):
            defaults = yaml.safe_load((REPO / "roles" / c["role"] / "defaults/main.yml").read_text(encoding="utf-8"))
            if c["switch"] not in _options(c["role"]) or c["switch"] not in defaults:
                problems.append(f"{c['id']}: switch {c['switch']} is not a documented option of roles/{c['role']}")
        if c.get("test"):
            if c["test"] not in tests:
                problems.append(f"{c['id']}: test {c['test']} is not in tests/roles/test_*.py")
        elif not (c.get("default_off") or c.get("untested")):
            problems.append(f"{c['id']}: neither a test nor the reason it is off by default or has none")
    assert not problems, "\n".join(problems)


def test_every_cis_tag_on_a_role_task_is_in_the_map() -> None:
    listed = {c["id"] for c in controls()}
    unlisted = sorted(tag for tag in tagged_tasks() if tag.startswith("cis_") and tag not in listed)
    assert not unlisted, f"tagged in roles/ but not in docs/hardening-controls.yml: {unlisted}"


def test_control_ids_are_unique() -> None:
    ids = [c["id"] for c in controls()]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_the_map_is_up_to_date() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, (
        "docs/hardening.md is out of date: run .venv/bin/python -m tests.roles.hardening_map --write"
    )


def test_each_hardened_role_readme_links_the_map() -> None:
    for role in ("base", "firewall", "tls"):
        readme = (REPO / "roles" / role / "README.md").read_text(encoding="utf-8")
        assert "docs/hardening.md" in readme, f"roles/{role}/README.md does not link its controls"


def test_every_setting_of_the_lynis_profile_is_explained_in_the_map() -> None:
    lines = LYNIS_PROFILE.read_text(encoding="utf-8").splitlines()
    settings = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    explained = [p["setting"] for p in lynis()["profile"]]
    assert settings == explained, (
        f"tests/roles/vm/lynis-vm-suite.prf {settings} vs docs/hardening-controls.yml {explained}"
    )
    assert all(str(p.get("why", "")).strip() for p in lynis()["profile"])


def test_every_lynis_finding_in_the_map_says_why_it_stays() -> None:
    for f in lynis()["findings"]:
        assert {"id", "kind", "finding", "why"} <= f.keys() and f["kind"] in {"warning", "suggestion"}, f
        assert str(f["why"]).strip(), f
    assert LYNIS_BEGIN in DOC.read_text(encoding="utf-8")
