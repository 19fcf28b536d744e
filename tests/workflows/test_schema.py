"""Workflow documents are refused at save and at start, each with the file and the node named; valid ones load."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ai_assistant.cli import app
from ai_assistant.workflows.errors import WorkflowError
from ai_assistant.workflows.loader import load_workflows
from ai_assistant.workflows.schema import parse

ROOT = Path(__file__).resolve().parents[2]
ENV = {"ERP_TOKEN": "t0ken-for-tests"}


def valid() -> dict[str, Any]:
    return {
        "id": "orders",
        "version": 1,
        "settings": {"http": {"allow_hosts": ["erp.example.com"]}},
        "nodes": [
            {"id": "start", "kind": "trigger", "keywords": ["order"]},
            {"id": "intent", "kind": "branch", "cases": [{"label": "lookup", "regex": r"\d+"}]},
            {
                "id": "erp",
                "kind": "http",
                "url": "https://erp.example.com/orders/{{ message.text }}",
                "headers": {"Authorization": "Bearer {{ secrets.ERP_TOKEN }}"},
                "map": {"status": "{{ response.json.status }}"},
            },
            {"id": "answer", "kind": "reply", "text": "It is {{ vars.status }} ({{ nodes.erp.status }})."},
            {"id": "ask", "kind": "reply", "text": "Which order?"},
        ],
        "edges": [
            {"from": "start", "to": "intent"},
            {"from": "intent", "to": "erp", "when": "lookup"},
            {"from": "intent", "to": "ask", "when": "default"},
            {"from": "erp", "to": "answer"},
        ],
    }


def node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == node_id)


def test_a_valid_workflow_loads_with_its_graph() -> None:
    flow = parse(valid(), "workflows/orders.yaml", ENV)
    assert flow.trigger.id == "start"
    assert flow.next_node("intent", "lookup") == "erp" and flow.next_node("erp", "error") is None


def test_a_loop_with_a_way_out_is_accepted() -> None:
    doc = valid()
    doc["nodes"].append({"id": "retry", "kind": "set", "values": {"tries": "again"}})
    doc["edges"] += [{"from": "erp", "to": "retry", "when": "error"}, {"from": "retry", "to": "intent"}]
    assert parse(doc, "f.yaml", ENV).next_node("retry", "next") == "intent"


def _add(doc: dict[str, Any], *nodes: dict[str, Any], edges: list[dict[str, str]] | None = None) -> None:
    doc["nodes"].extend(nodes)
    doc["edges"].extend(edges or [])


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown node kind", lambda d: _add(d, {"id": "x", "kind": "teleport"}), "node x", "unknown kind 'teleport'"),
    ("unknown field", lambda d: node(d, "answer").update(colour="red"), "node answer: colour", "Extra inputs"),
    ("duplicate id", lambda d: _add(d, {"id": "ask", "kind": "reply", "text": "hi"}), "node ask", "used by two"),
    (
        "edge to nowhere",
        lambda d: d["edges"].append({"from": "ask", "to": "ghost"}),
        "edges[4]",
        "ghost does not exist",
    ),
    (
        "edge by a label the node has not",
        lambda d: d["edges"].append({"from": "intent", "to": "ask", "when": "refund"}),
        "node intent",
        "edge on 'refund'; allowed: lookup, default",
    ),
    (
        "unreachable node",
        lambda d: _add(d, {"id": "orphan", "kind": "reply", "text": "never"}),
        "node orphan",
        "unreachable from the trigger",
    ),
    (
        "cycle without an exit",
        lambda d: _add(
            d,
            {"id": "a", "kind": "set", "values": {"n": "1"}},
            {"id": "b", "kind": "set", "values": {"m": "2"}},
            edges=[{"from": "erp", "to": "a", "when": "error"}, {"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
        ),
        "node a",
        "cycle with no way out",
    ),
    (
        "missing secret",
        lambda d: node(d, "erp")["headers"].update(X="{{ secrets.NOT_SET_ANYWHERE }}"),
        "node erp: headers.X",
        "secret 'NOT_SET_ANYWHERE' is not set",
    ),
    (
        "secret outside headers",
        lambda d: node(d, "ask").update(text="{{ secrets.ERP_TOKEN }}"),
        "node ask: text",
        "unknown variable 'secrets'",
    ),
    (
        "variable no node sets",
        lambda d: node(d, "answer").update(text="{{ vars.colour }}"),
        "node answer: text",
        "unknown variable 'vars.colour' (no node sets it)",
    ),
    ("unknown node output", lambda d: node(d, "ask").update(text="{{ nodes.crm.x }}"), "node ask", "'nodes.crm'"),
    ("unknown message field", lambda d: node(d, "ask").update(text="{{ message.body }}"), "node ask", "'message.body'"),
    (
        "unknown top-level name",
        lambda d: node(d, "ask").update(text="{{ user }}"),
        "node ask",
        "unknown variable 'user'",
    ),
    ("template syntax", lambda d: node(d, "ask").update(text="{{ vars. }}"), "node ask: text", "template error"),
    ("unknown filter", lambda d: node(d, "ask").update(text="{{ message.text | shout }}"), "node ask", "shout"),
    (
        "response outside a mapping",
        lambda d: node(d, "ask").update(text="{{ response.json }}"),
        "node ask",
        "unknown variable 'response'",
    ),
    (
        "host outside the allowlist",
        lambda d: node(d, "erp").update(url="https://evil.example.net/x"),
        "node erp: url",
        "evil.example.net is not in settings.http.allow_hosts",
    ),
    (
        "templated host",
        lambda d: node(d, "erp").update(url="https://{{ message.text }}/x"),
        "node erp: url",
        "literal http:// or https:// and host",
    ),
    (
        "two triggers",
        lambda d: _add(d, {"id": "again", "kind": "trigger"}, edges=[{"from": "again", "to": "ask"}]),
        "nodes",
        "exactly one trigger node (found 2)",
    ),
    (
        "no reply node",
        lambda d: [n.update(kind="end") or n.pop("text") for n in d["nodes"] if n["kind"] == "reply"],
        "nodes",
        "no reply node",
    ),
    ("dead end", lambda d: d["edges"].remove({"from": "erp", "to": "answer"}), "node erp", "no outgoing edge"),
    ("bad regex", lambda d: node(d, "start").update(regex="(unclosed"), "node start: regex", "regular expression"),
    ("bad command", lambda d: node(d, "start").update(commands=["order"]), "node start: commands", "not a command"),
    ("edge back to the trigger", lambda d: d["edges"].append({"from": "ask", "to": "start"}), "node start", "trigger"),
    ("bad version", lambda d: d.update(version=0), "version", "greater than or equal to 1"),
    ("unknown setting", lambda d: d["settings"]["http"].update(allow_all=True), "settings.http.allow_all", "Extra"),
]


@pytest.mark.parametrize(("case", "change", "key", "problem"), CASES, ids=[c[0] for c in CASES])
def test_bad_workflows_are_refused_with_the_node_named(
    case: str, change: Callable[[dict[str, Any]], None], key: str, problem: str
) -> None:
    doc = copy.deepcopy(valid())
    change(doc)
    with pytest.raises(WorkflowError) as caught:
        parse(doc, "workflows/orders.yaml", ENV)
    message = str(caught.value)
    assert message.startswith("workflows/orders.yaml: ") and "\n" not in message, message
    assert caught.value.key.startswith(key), message
    assert problem in message, message


def test_the_loader_refuses_bad_yaml_and_duplicate_ids_with_the_file_named(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "a.yaml").write_text(yaml.safe_dump(valid()))
    (folder / "b.yaml").write_text(yaml.safe_dump(valid()))
    with pytest.raises(WorkflowError, match=r"workflows/b.yaml: id: 'orders' is also the id in workflows/a.yaml"):
        load_workflows(tmp_path, ENV)
    (folder / "b.yaml").write_text("id: [unclosed\n")
    with pytest.raises(WorkflowError, match=r"workflows/b.yaml: not valid YAML at line 2"):
        load_workflows(tmp_path, ENV)
    (folder / "b.yaml").unlink()
    assert [f.id for f in load_workflows(tmp_path, ENV)] == ["orders"]
    assert load_workflows(tmp_path / "nowhere", ENV) == [], "no folder: no workflows, today's default answer"


def test_the_shipped_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_TOKEN", "example-token-value")
    result = CliRunner().invoke(
        app, ["workflow", "validate", str(ROOT / "config/workflows/examples/order-status.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "order-status v1 ok" in result.output


def test_cli_validate_names_the_node_and_fails(tmp_path: Path) -> None:
    doc = valid()
    node(doc, "answer")["text"] = "{{ vars.colour }}"
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "orders.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["workflow", "validate", "--config-dir", str(tmp_path)], env=ENV)
    assert result.exit_code == 1
    assert "error: workflows/orders.yaml: node answer: text: unknown variable 'vars.colour'" in result.output


def test_cli_list_shows_what_the_service_would_load(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "orders.yaml").write_text(yaml.safe_dump(valid()))
    result = CliRunner().invoke(app, ["workflow", "list", "--config-dir", str(tmp_path)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "orders" in result.output and '{"keywords": ["order"]}' in result.output
    empty = CliRunner().invoke(app, ["workflow", "validate", "--config-dir", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no workflow files in" in empty.output
