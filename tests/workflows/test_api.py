"""The workflows' admin API in process (FastAPI's TestClient over the real router and a real SQLite store)."""

from __future__ import annotations

import json
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
