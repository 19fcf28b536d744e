"""Saving workflows from the console: the real app in process (TestClient), real files in tmp_path, real SQLite audit.
The save writes config/workflows/<id>.yaml atomically, keeps the replaced file as a version, refuses a bad document
with the node named and nothing written, and round-trips: a saved file saved again unedited is byte-for-byte equal."""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_assistant.console.store import ConsoleStore
from ai_assistant.workflows.loader import load_workflows
from ai_assistant.workflows.versions import WorkflowFiles, canonical, parse_text
from tests.console.conftest import VIEWER_PASSWORD, Console, make_console
from tests.workflows.test_schema import ENV, node, valid

PAGE = "/admin/workflows"


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with make_console(tmp_path) as c:
        assert c.login().status_code == 303
        yield c


def save(console: Console, document: str, accept_json: bool = True) -> Any:
    headers = {"Accept": "application/json"} if accept_json else {}
    token = _token(console)
    return console.client.post(
        f"{PAGE}/save", data={"document": document, "csrf_token": token}, headers=headers, follow_redirects=False
    )


def _token(console: Console) -> str:
    from tests.console.conftest import csrf

    return csrf(console.client.get(PAGE))


def folder(console: Console) -> Path:
    return console.config_dir / "workflows"


def audit(console: Console) -> list[Any]:
    store = ConsoleStore.in_data_dir(console.data_dir)
    try:
        return [e for e in store.audit_entries() if e.action.startswith("workflow.")]
    finally:
        store.close()


def test_save_writes_the_file_keeps_versions_and_round_trips(console: Console) -> None:
    first = save(console, json.dumps(valid()))
    assert first.status_code == 200, first.text
    assert first.json()["kept"] is None and first.json()["url"] == f"{PAGE}/orders?saved=1"
    path = folder(console) / "orders.yaml"
    written = path.read_text()
    assert parse_text(written, "x", ENV).model_dump() == parse_text(json.dumps(valid()), "y", ENV).model_dump()
    assert [f.id for f in load_workflows(console.config_dir, ENV)] == ["orders"], "the loader reads what was saved"

    # Round trip through the route: the saved YAML, posted again unedited, writes the same bytes.
    again = save(console, written)
    assert again.status_code == 200 and again.json() == {
        "ok": True, "id": "orders", "kept": 1, "changed": False, "url": f"{PAGE}/orders?saved=1",
    }  # fmt: skip
    assert path.read_text() == written
    # ...and so does the document as the canvas sends it: JSON, keys in another order.
    shuffled = yaml.safe_load(written)
    shuffled = {k: shuffled[k] for k in reversed(list(shuffled))}
    assert save(console, json.dumps(shuffled)).json()["changed"] is False
    assert path.read_text() == written

    edited = copy.deepcopy(valid())
    node(edited, "ask")["text"] = "Which order number?"
    edited["version"] = 2
    assert save(console, json.dumps(edited)).json()["kept"] == 3
    assert "Which order number?" in path.read_text()
    kept = folder(console) / "versions"
    assert sorted(p.name for p in kept.iterdir()) == ["orders.v1.yaml", "orders.v2.yaml", "orders.v3.yaml"]
    assert (kept / "orders.v3.yaml").read_text() == written
    assert [f.version for f in load_workflows(console.config_dir, ENV)] == [2], "kept versions are never loaded"
    actions = [(e.action, e.target, e.after["changed"]) for e in reversed(audit(console))]
    assert actions == [("workflow.save", "workflows/orders.yaml", c) for c in (True, False, False, True)]


def test_the_example_round_trips_through_canonical_form() -> None:
    example = Path(__file__).parents[2] / "config/workflows/examples/order-status.yaml"
    text = canonical(parse_text(example.read_text(), "example", ENV))
    assert canonical(parse_text(text, "again", ENV)) == text
    assert "Bearer {{ secrets.ERP_TOKEN }}" in text, "secret references are kept as templates, never resolved"
    assert ENV["ERP_TOKEN"] not in text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: node(d, "ask").update(kind="teleport"), "node ask: unknown kind 'teleport'"),
        (lambda d: d["edges"].pop(), "node erp: has no outgoing edge"),
        (lambda d: node(d, "ask").update(text="{{ vars.nowhere }}"), "node ask: text"),
        (lambda d: d.update(id="Bad Id"), "workflow: id:"),
        (lambda d: node(d, "erp").update(url="https://evil.example.net/x"), "node erp: url: host evil.example.net"),
    ],
)
def test_bad_documents_are_refused_with_the_node_named_and_nothing_written(
    console: Console, change: Any, named: str
) -> None:
    assert save(console, json.dumps(valid())).status_code == 200
    before = (folder(console) / "orders.yaml").read_bytes()
    doc = valid()
    change(doc)
    refused = save(console, json.dumps(doc))
    assert refused.status_code == 422
    assert named in refused.json()["message"]
    page = save(console, json.dumps(doc), accept_json=False)
    assert page.status_code == 422 and 'id="error"' in page.text
    assert named in html.unescape(page.text), "the page names it too"
    assert (folder(console) / "orders.yaml").read_bytes() == before
    assert not (folder(console) / "versions").exists(), "nothing kept: nothing was replaced"
    assert len(audit(console)) == 1


@pytest.mark.parametrize(
    ("document", "named"),
    [("", "document: is empty"), ("id: [unclosed", "not valid YAML"), ("- a list", "must be a mapping"),
     ("x" * 300_000, "over 262144 bytes")],
)  # fmt: skip
def test_unparsable_documents_are_refused(console: Console, document: str, named: str) -> None:
    refused = save(console, document)
    assert refused.status_code == 422 and named in refused.json()["message"]
    assert not folder(console).exists()


def test_an_id_held_by_another_file_is_refused(console: Console) -> None:
    folder(console).mkdir()
    (folder(console) / "hand-written.yaml").write_text(yaml.safe_dump(valid()))
    refused = save(console, json.dumps(valid()))
    assert refused.status_code == 422
    assert refused.json()["message"] == "workflows/orders.yaml: id: 'orders' is also the id in hand-written.yaml"
    assert sorted(p.name for p in folder(console).iterdir()) == ["hand-written.yaml"]


def test_disable_enable_and_roll_back(console: Console) -> None:
    assert save(console, json.dumps(valid())).status_code == 200
    path = folder(console) / "orders.yaml"
    original = path.read_text()
    token = _token(console)
    off = console.client.post(f"{PAGE}/orders/disable", data={"csrf_token": token}, follow_redirects=False)
    assert off.status_code == 303 and off.headers["location"] == f"{PAGE}/orders?saved=1"
    assert "enabled: false" in path.read_text()
    assert [f.enabled for f in load_workflows(console.config_dir, ENV)] == [False]
    assert console.client.post(f"{PAGE}/orders/enable", data={"csrf_token": token}).status_code == 200
    assert path.read_text() == original, "enabled is the default: the field goes away again"

    edited = valid()
    edited["version"] = 2
    assert save(console, json.dumps(edited)).status_code == 200
    page = console.client.get(f"{PAGE}/orders")
    assert page.status_code == 200 and '<option value="3">v3</option>' in page.text
    back = console.client.post(f"{PAGE}/orders/rollback", data={"csrf_token": token, "version": "1"})
    assert back.status_code == 200
    assert path.read_text() == original
    assert [f.version for f in load_workflows(console.config_dir, ENV)] == [1]
    assert WorkflowFiles(console.config_dir).versions("orders") == [1, 2, 3, 4], "the rolled-back file is kept too"
    actions = [(e.action, e.after.get("restored")) for e in reversed(audit(console))]
    assert actions == [("workflow.save", None), ("workflow.disable", None), ("workflow.enable", None),
                       ("workflow.save", None), ("workflow.rollback", 1)]  # fmt: skip

    for bad, named in (("99", "no kept version 99 of orders"), ("x", "'x' is not a number")):
        refused = console.client.post(f"{PAGE}/orders/rollback", data={"csrf_token": token, "version": bad})
        assert refused.status_code == 422 and named in html.unescape(refused.text)
    missing = console.client.post(f"{PAGE}/nope/disable", data={"csrf_token": token})
    assert missing.status_code == 422 and "no workflow nope" in missing.text
    assert path.read_text() == original


def test_validate_and_dry_run_from_the_console(console: Console) -> None:
    token = _token(console)
    headers = {"Accept": "application/json"}
    ok = console.client.post(f"{PAGE}/validate", data={"csrf_token": token, "document": json.dumps(valid())})
    assert ok.status_code == 200 and ok.json()["id"] == "orders" and ok.json()["yaml"].startswith("id: orders\n")
    doc = valid()
    node(doc, "ask")["kind"] = "teleport"
    form = {"csrf_token": token, "document": json.dumps(doc)}
    bad = console.client.post(f"{PAGE}/validate", data=form, headers=headers)
    assert bad.status_code == 422 and bad.json()["key"] == "node ask"
    # No HTTP call on this path ("hello" is not a number): the trigger, the branch's default edge, the reply.
    ran = console.client.post(
        f"{PAGE}/dry-run", data={"csrf_token": token, "document": json.dumps(valid()), "message": "order hello"}
    )
    assert ran.status_code == 200, ran.text
    body = ran.json()
    assert body["answer"] == "Which order?"
    path = [(s["node"], s["label"]) for s in body["steps"]]
    assert path == [("start", "next"), ("intent", "default"), ("ask", "next")]
    empty = console.client.post(f"{PAGE}/dry-run", data={"csrf_token": token, "document": json.dumps(valid())})
    assert empty.status_code == 422 and empty.json()["key"] == "message"
    assert not folder(console).exists(), "validate and dry run write nothing"


def test_viewers_and_forged_tokens_change_nothing(console: Console) -> None:
    document = json.dumps(valid())
    forged = console.client.post(f"{PAGE}/save", data={"document": document, "csrf_token": "forged"})
    assert forged.status_code == 403
    console.client.cookies.clear()
    assert console.login("victor", VIEWER_PASSWORD).status_code == 303
    assert save(console, document).status_code == 403
    viewed = console.client.get(PAGE)
    assert viewed.status_code == 200 and 'id="canvas"' in viewed.text, "a viewer sees the page"
    assert 'id="validate"' not in viewed.text and 'id="save-canvas"' not in viewed.text
    assert not folder(console).exists()
    assert console.client.get(f"{PAGE}/..%2F..%2Fassistant").status_code in (404, 422)


def test_a_file_that_does_not_validate_is_shown_not_drawn(console: Console) -> None:
    folder(console).mkdir()
    doc = valid()
    node(doc, "ask")["kind"] = "teleport"
    (folder(console) / "orders.yaml").write_text(yaml.safe_dump(doc))
    listing = console.client.get(PAGE)
    assert "workflows/orders.yaml: node ask: unknown kind &#39;teleport&#39;" in listing.text
    page = console.client.get(f"{PAGE}/orders")
    assert page.status_code == 409 and "node ask: unknown kind" in page.text
    assert "kind: teleport" in page.text, "its text is in the YAML form, to be fixed and saved"
    assert console.client.get(f"{PAGE}/missing").status_code == 404
