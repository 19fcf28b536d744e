"""The admin HTTP API: authenticated, uploads ingested, bad input answered 4xx with the field named."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from ai_assistant.knowledge.api import kb_router
from ai_assistant.knowledge.retrieval import KnowledgeBase

from .builders import make_docx, make_pdf

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def require_admin(authorization: str | None = Header(default=None)) -> None:
    """What the lead's dependency does: a bearer admin token."""
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401, detail="admin token required")


@pytest.fixture
def client(make_kb: Callable[..., KnowledgeBase]) -> Iterator[TestClient]:
    kb = make_kb(max_file_bytes=64 * 1024)
    app = FastAPI()
    app.include_router(kb_router(kb, require_admin))
    with TestClient(app) as c:
        yield c


def upload(client: TestClient, name: str, data: bytes, **form: str) -> tuple[int, dict]:
    response = client.post("/admin/kb/documents", headers=AUTH, files={"file": (name, data)}, data=form)
    return response.status_code, response.json()


def test_every_route_needs_the_admin_token(client: TestClient) -> None:
    assert client.get("/admin/kb/documents").status_code == 401
    assert client.get("/admin/kb/search", params={"q": "vpn"}).status_code == 401
    assert client.delete("/admin/kb/documents/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/admin/kb/documents", files={"file": ("a.md", b"# A")}).status_code == 401


def test_upload_search_list_delete(client: TestClient) -> None:
    data = make_docx("Canteen", [("Opening hours", ["The canteen opens at 11:30 and closes at 13:30."])])
    status, body = upload(client, "canteen.docx", data, url="https://wiki.example.com/canteen")
    assert status == 201 and body["status"] == "added" and body["source"] == "uploads/canteen.docx"
    assert upload(client, "canteen.docx", data, url="https://wiki.example.com/canteen")[1]["status"] == "unchanged"
    status, body = upload(client, "canteen.docx", make_docx("Canteen", [("Hours", ["Opens at 11:00."])]))
    assert (status, body["status"]) == (200, "updated")

    hits = client.get("/admin/kb/search", params={"q": "When does the canteen open?"}, headers=AUTH).json()["hits"]
    assert hits[0]["source"] == "uploads/canteen.docx" and "11:00" in hits[0]["text"]
    docs = client.get("/admin/kb/documents", headers=AUTH).json()["documents"]
    assert [d["source"] for d in docs] == ["uploads/canteen.docx"]
    response = client.delete(f"/admin/kb/documents/{docs[0]['doc_id']}", headers=AUTH)
    assert response.status_code == 200 and response.json()["chunks"] == 1
    assert client.get("/admin/kb/documents", headers=AUTH).json()["documents"] == []


def test_upload_by_source_path_is_deletable_by_that_path(client: TestClient) -> None:
    status, _ = upload(client, "r.pdf", make_pdf(["Remote work is allowed two days a week."]), source="hr/remote.pdf")
    assert status == 201
    assert client.delete("/admin/kb/documents/hr/remote.pdf", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("name", "data", "form", "status", "field", "message"),
    [
        ("slides.pptx", b"PK", {}, 415, "file", "unsupported file type"),
        ("broken.pdf", b"%PDF-1.4 nope", {}, 422, "file", "broken.pdf: not a readable PDF"),
        ("empty.md", b"", {}, 422, "file", "empty file"),
        (".hidden.md", b"# x", {}, 400, "file", "not usable"),
        ("big.txt", b"x" * (64 * 1024 + 1), {}, 413, "file", "limit"),
        ("ok.md", b"# ok", {"url": "javascript:alert(1)"}, 400, "url", "http"),
    ],
)
def test_bad_uploads_are_4xx_with_the_field_named_and_store_nothing(
    client: TestClient, name: str, data: bytes, form: dict, status: int, field: str, message: str
) -> None:
    got, body = upload(client, name, data, **form)
    assert got == status
    assert body["field"] == field and message in body["error"]
    assert client.get("/admin/kb/documents", headers=AUTH).json()["documents"] == []


def test_upload_without_a_file_field(client: TestClient) -> None:
    response = client.post("/admin/kb/documents", headers=AUTH, data={"title": "x"})
    assert response.status_code == 400 and response.json()["field"] == "file"


@pytest.mark.parametrize(
    ("params", "field"), [({}, "q"), ({"q": "  "}, "q"), ({"q": "x", "k": "abc"}, "k"), ({"q": "x", "k": "0"}, "k")]
)
def test_bad_search_parameters(client: TestClient, params: dict, field: str) -> None:
    response = client.get("/admin/kb/search", params=params, headers=AUTH)
    assert response.status_code == 400 and response.json()["field"] == field


def test_delete_unknown_is_404(client: TestClient) -> None:
    response = client.delete("/admin/kb/documents/nope", headers=AUTH)
    assert response.status_code == 404 and response.json()["field"] == "ref"
