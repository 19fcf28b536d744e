"""Grafana dashboards generated from Python: up to date, valid against the dashboard JSON schema (generated once from
@grafana/schema, see monitoring/grafana/schema/README.md), consistent datasource/refIds/ids, every query parses."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from monitoring.dashboards.__main__ import render_all
from monitoring.dashboards.common import DATASOURCE_UID

from .conftest import MONITORING
from .promql import grafana_to_promql

DASHBOARDS = MONITORING / "grafana" / "dashboards"
SCHEMA = json.loads((MONITORING / "grafana" / "schema" / "dashboard-v1.schema.json").read_text())
PROVISIONING = MONITORING / "grafana" / "provisioning"


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(SCHEMA)


def committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def targets(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in doc["panels"] for t in p.get("targets", [])]


def test_committed_json_is_what_the_code_renders() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "monitoring.dashboards", "--check"],
        cwd=MONITORING.parent,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(committed()) == set(render_all())


def test_three_layers_with_stable_unique_uids() -> None:
    docs = committed()
    assert set(docs) == {"ai-assistant-business", "ai-assistant-service", "ai-assistant-infrastructure"}
    assert all(doc["uid"] == uid for uid, doc in docs.items())


@pytest.mark.parametrize("uid", sorted(p.stem for p in DASHBOARDS.glob("*.json")))
def test_valid_against_the_dashboard_schema(uid: str) -> None:
    errors = sorted(validator().iter_errors(committed()[uid]), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_schema_rejects_a_broken_dashboard() -> None:
    doc = copy.deepcopy(committed()["ai-assistant-service"])
    doc["title"] = 5
    doc["graphTooltip"] = 7
    doc["panels"][1]["gridPos"]["h"] = "eight"
    messages = [e.message for e in validator().iter_errors(doc)]
    assert any("5 is not of type 'string'" in m for m in messages)
    assert any("7 is not one of" in m for m in messages)
    assert len(messages) >= 3


@pytest.mark.parametrize("uid", sorted(p.stem for p in DASHBOARDS.glob("*.json")))
def test_panels_use_the_datasource_variable_have_ids_and_ref_ids(uid: str) -> None:
    doc = committed()[uid]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and all(refs) and len(refs) == len(set(refs)), f"{panel['title']}: refIds {refs}"
        assert panel.get("description"), f"{panel['title']}: no description"


def test_every_query_parses_with_promtool(promtool: str, tmp_path: Path) -> None:
    rules = []
    for uid, doc in committed().items():
        for i, (_title, target) in enumerate(targets(doc)):
            rules.append({"record": f"check:{uid.replace('-', '_')}:q{i}", "expr": grafana_to_promql(target["expr"])})
        for var in doc["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
                assert query.startswith("label_values("), f"{uid}: variable {var['name']}"
                inner = query[len("label_values(") : query.rindex(",")]
                rules.append({"record": f"check:{uid.replace('-', '_')}:{var['name']}", "expr": inner})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_provisioning_points_at_the_datasource_and_the_dashboards() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID and source["isDefault"] is True
    dash = yaml.safe_load((PROVISIONING / "dashboards" / "ai-assistant.yml").read_text())
    [provider] = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    assert provider["allowUiUpdates"] is False


def test_monitoring_code_type_checks_strictly() -> None:
    """grafana-foundation-sdk does no runtime checks (a string where a number belongs is accepted); its type hints
    are the check, so monitoring/ is kept mypy --strict clean like service/."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mypy"), "--strict", "monitoring"],
        cwd=MONITORING.parent,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
