"""The alert rules: generated files up to date, valid for promtool, every alert unit-tested both ways, every alert
annotated and linked to a runbook section that exists and says what to check first."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import rulegen

from .conftest import MONITORING, RULE_TESTS, RULES, RUNBOOKS


def _rule_groups() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(RULES.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.append((path, group))
    return out


def alerts() -> list[dict[str, Any]]:
    return [rule for _, group in _rule_groups() for rule in group["rules"] if "alert" in rule]


def test_committed_rules_are_what_the_generator_writes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "monitoring.rulegen", "--check"], cwd=MONITORING.parent, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_generator_check_notices_a_hand_edit(tmp_path: Path) -> None:
    for src in RULES.glob("*.rules.yml"):
        (tmp_path / src.name).write_text(src.read_text())
    edited = tmp_path / "assistant.rules.yml"
    edited.write_text(edited.read_text().replace("> 0.05", "> 0.5", 1))
    assert rulegen.main(["--out", str(tmp_path), "--check"]) == 1


def test_promtool_check_rules(promtool: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "rules", *map(str, sorted(RULES.glob("*.yml")))], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_config_of_the_example(promtool: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "config", str(MONITORING / "prometheus" / "prometheus.yml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("test_file", sorted(p.name for p in RULE_TESTS.glob("*.test.yml")))
def test_promtool_unit_tests(promtool: str, test_file: str) -> None:
    proc = subprocess.run([promtool, "test", "rules", test_file], cwd=RULE_TESTS, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A wrong expected annotation must make promtool fail, or the suite above proves nothing."""
    src = (RULE_TESTS / "assistant.test.yml").read_text()
    broken = src.replace("summary: 20% of webhook requests", "summary: 30% of webhook requests", 1)
    assert broken != src
    (tmp_path / "broken.test.yml").write_text(broken.replace("../rules/", f"{RULES}/"))
    proc = subprocess.run([promtool, "test", "rules", "broken.test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "30% of webhook requests" in proc.stdout + proc.stderr


def _unit_cases() -> list[dict[str, Any]]:
    cases = []
    for path in RULE_TESTS.glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not() -> None:
    cases = _unit_cases()
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in cases:
        if case.get("exp_alerts"):
            fired.update((case["alertname"], a["exp_labels"]["severity"]) for a in case["exp_alerts"])
        else:
            quiet.add(case["alertname"])
    problems = []
    for rule in alerts():
        if (rule["alert"], rule["labels"]["severity"]) not in fired:
            problems.append(f"{rule['alert']} ({rule['labels']['severity']}): no promtool case where it fires")
        if rule["alert"] not in quiet and rule["alert"] not in ALWAYS_FIRING:
            problems.append(f"{rule['alert']}: no promtool case where it must not fire")
    assert not problems, "\n".join(sorted(set(problems)))


# The dead man's switch fires always (vector(1)): it has no quiet case, and severity none pages nobody by itself.
ALWAYS_FIRING = {"Watchdog"}


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in alerts():
        allowed = {"none"} if rule["alert"] in ALWAYS_FIRING else {"critical", "warning"}
        assert rule["labels"]["severity"] in allowed, rule["alert"]
        assert rule["labels"]["service"], rule["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']}: no {key}"


def _sections(markdown: str) -> dict[str, str]:
    """GitHub-style anchor of each `## ` heading -> the text of its section."""
    out: dict[str, str] = {}
    for chunk in re.split(r"^## ", markdown, flags=re.M)[1:]:
        heading, _, body = chunk.partition("\n")
        anchor = re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        out[anchor] = body
    return out


def test_every_runbook_link_points_to_a_section_that_says_what_to_check_first() -> None:
    base, _ = rulegen.load_config()
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(base + "/"), url
        page, _, anchor = url[len(base) + 1 :].partition("#")
        path = RUNBOOKS / page
        assert path.is_file(), f"{rule['alert']}: {path} does not exist"
        sections = _sections(path.read_text())
        assert anchor in sections, f"{rule['alert']}: {page} has no section `## {rule['alert']}`"
        assert "**Check first:**" in sections[anchor], f"{rule['alert']}: section in {page} lacks **Check first:**"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"slos": {"availability": {"objective": 99.95}}}, "slos.availability.objective: must be a number in [0.5, 1)"),
        ({"slos": {"availability": {"objective": "high"}}}, "slos.availability.objective: must be a number"),
        ({"slos": {"ack_latency": {"objective": 0.99}}}, "slos.ack_latency.threshold_seconds: must be a positive"),
        ({"slos": {"durability": {"objective": 0.9}}}, "slos.durability: unknown SLO"),
        ({"runbook_base_url": "docs/runbooks"}, "runbook_base_url: must be an http(s) URL"),
    ],
)
def test_bad_generator_config_gives_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patch: dict[str, Any], message: str
) -> None:
    config = yaml.safe_load((MONITORING / "config.yml").read_text())
    for key, value in patch.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                config[key][sub] = subvalue
        else:
            config[key] = value
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    assert rulegen.main(["--config", str(path), "--out", str(tmp_path / "out"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_bad_generator_config_that_is_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yml"
    path.write_text("slos: [unclosed\n")
    assert rulegen.main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err
    assert not (tmp_path / "out").exists()


def test_objective_from_config_reaches_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((MONITORING / "config.yml").read_text())
    config["slos"]["availability"]["objective"] = 0.995
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    files = rulegen.generate(path)
    objectives = yaml.safe_load(files["slo-objectives.rules.yml"])["groups"][0]["rules"]
    budget = next(
        r for r in objectives if r["record"] == "slo:error_budget:ratio" and r["labels"]["slo"] == "availability"
    )
    assert budget["expr"] == "vector(0.005)"
