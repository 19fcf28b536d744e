"""The workflows' admin API in process (FastAPI's TestClient over the real router and a real SQLite store)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from ai_assistant.store.sqlite import SQLiteStore
from ai_assistant.workflows.api import workflows_router
from ai_assistant.workflows.schema import parse
from tests.workflows.test_schema import ENV, valid

TOKEN = "workflow-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def require_admin(authorization: str | None = Header(default=None)) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401, detail="bad or missing admin token")


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    store = SQLiteStore(tmp_path / "state.sqlite3")
    app = FastAPI()
    app.include_router(workflows_router(store, [parse(valid(), "f.yaml", ENV)], require_admin))
    with TestClient(app) as c:
        yield c


def test_every_route_needs_the_admin_token(client: TestClient) -> None:
    assert client.get("/admin/api/workflows").status_code == 401
    assert client.get("/admin/api/workflows/orders").status_code == 401
    assert client.get("/admin/api/workflows/traces/e").status_code == 401
    assert client.post("/admin/api/workflows/validate", content=b"id: x").status_code == 401


def test_list_show_and_missing(client: TestClient) -> None:
    listed = client.get("/admin/api/workflows", headers=AUTH).json()["workflows"]
    assert listed == [{"id": "orders", "version": 1, "name": "", "enabled": True, "nodes": 5,
                       "trigger": {"keywords": ["order"]}}]  # fmt: skip
    doc = client.get("/admin/api/workflows/orders", headers=AUTH).json()
    assert parse(doc, "round-trip", ENV).model_dump() == parse(valid(), "f", ENV).model_dump(), "the document reloads"
    missing = client.get("/admin/api/workflows/nope", headers=AUTH)
    assert missing.status_code == 404 and missing.json() == {"error": "no workflow with id nope", "field": "id"}
    assert client.get("/admin/api/workflows/traces/none", headers=AUTH).status_code == 404


def test_validate_accepts_a_good_document_and_names_the_node_of_a_bad_one(client: TestClient) -> None:
    good = client.post("/admin/api/workflows/validate", headers=AUTH, content=yaml.safe_dump(valid()).encode())
    assert good.status_code == 200 and good.json() == {"ok": True, "id": "orders", "version": 1, "nodes": 5}
    as_json = client.post("/admin/api/workflows/validate", headers=AUTH, content=json.dumps(valid()).encode())
    assert as_json.status_code == 200
    bad = valid()
    bad["nodes"][3]["text"] = "{{ vars.colour }}"
    refused = client.post("/admin/api/workflows/validate", headers=AUTH, content=yaml.safe_dump(bad).encode())
    assert refused.status_code == 422
    assert refused.json() == {"error": "invalid", "key": "node answer: text",
                              "detail": "unknown variable 'vars.colour' (no node sets it)"}  # fmt: skip
    garbage = client.post("/admin/api/workflows/validate", headers=AUTH, content=b"id: [unclosed\n")
    assert garbage.status_code == 422 and garbage.json()["detail"] == "not valid UTF-8 YAML at line 2"
    scalar = client.post("/admin/api/workflows/validate", headers=AUTH, content=b"just text")
    assert scalar.status_code == 422 and "must be a mapping" in scalar.json()["detail"]
    big = client.post("/admin/api/workflows/validate", headers=AUTH, content=b"#" * (256 * 1024 + 1))
    assert big.status_code == 413 and big.json()["error"] == "too_large"


def dry_doc(base: str) -> dict[str, object]:
    return {
        "id": "dry",
        "version": 1,
        "settings": {"http": {"allow_hosts": ["127.0.0.1"], "allow_private": True}},
        "nodes": [
            {"id": "start", "kind": "trigger", "keywords": ["order"]},
            {"id": "erp", "kind": "http", "url": base + "/orders/{{ message.text.split()[-1] }}",
             "map": {"status": "{{ response.json.status }}"}},
            {"id": "notify", "kind": "http", "method": "POST", "url": base + "/orders/notify", "json": {"a": "b"},
             "map": {"ticket": "{{ response.json.order }}"}},
            {"id": "support", "kind": "handoff", "chat_id": "support", "text": "{{ message.text }}"},
            {"id": "answer", "kind": "reply", "text": "Order is {{ vars.status }}.{{ vars.ticket }}"},
        ],
        "edges": [
            {"from": "start", "to": "erp"},
            {"from": "erp", "to": "notify"},
            {"from": "notify", "to": "support"},
            {"from": "support", "to": "answer"},
        ],
    }  # fmt: skip


def test_dry_run_shows_each_node_and_changes_nothing(client: TestClient, tmp_path: Path) -> None:
    from tests.workflows.standin import BusinessSystem

    erp = BusinessSystem()
    try:
        asked = {"document": yaml.safe_dump(dry_doc(erp.base)), "message": {"text": "order 12"}}
        resp = client.post("/admin/api/workflows/dry-run", headers=AUTH, content=json.dumps(asked).encode())
        assert resp.status_code == 200, resp.text
        result = resp.json()
        assert result["answer"] == "Order is shipped." and result["outcome"] == "answered"
        steps = {s["node"]: s for s in result["steps"]}
        assert list(steps) == ["start", "erp", "notify", "support", "answer"]
        assert steps["erp"]["outputs"]["json"]["order"] == "12"
        assert steps["notify"]["outputs"] == {"dry_run": "POST not sent in a dry run"}
        assert steps["support"]["outputs"]["delivered"] is False
        assert dict(erp.calls) == {"/orders/12": 1}, "only the GET request was sent"
    finally:
        erp.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM workflow_steps").fetchone() == (0,), "nothing recorded"


@pytest.mark.parametrize(
    ("body", "key", "detail"),
    [
        (b"{not json", "", "Invalid JSON"),
        (json.dumps({"document": {"id": "x"}, "message": {}}).encode(), "message.text", "Field required"),
        (json.dumps({"document": {"id": "x"}, "message": {"text": "hi"}, "extra": 1}).encode(), "extra", "Extra"),
        (json.dumps({"document": "id: x", "message": {"text": "hi"}}).encode(), "nodes", "non-empty list"),
    ],
)
def test_dry_run_refuses_bad_input_with_the_field_named(client: TestClient, body: bytes, key: str, detail: str) -> None:
    resp = client.post("/admin/api/workflows/dry-run", headers=AUTH, content=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid" and resp.json()["key"] == key and detail in resp.json()["detail"]
