"""The knowledge base page: documents in the store, upload (the parsers and limits of `ai-assistant kb ingest`),
delete, re-ingest, and a search box showing the hits the assistant would ground an answer on, with their scores.

An upload of several files is checked whole before anything is stored: one file of an unsupported type, over the size
limit or without text refuses the lot, naming the file. The console keeps each uploaded original (re-ingest needs the
bytes; the vector store keeps only chunks) under <data_dir>/console/kb-originals/<doc_id>/."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from ..knowledge.errors import KnowledgeError
from ..knowledge.ingest import Outcome, Prepared
from ..knowledge.parsers import PARSERS, supported
from ..knowledge.retrieval import KnowledgeBase
from .store import User
from .web import PREFIX, Console

log = logging.getLogger(__name__)

# At most this many files in one upload: each is held in memory while the whole upload is checked.
MAX_FILES = 20
MAX_QUERY_CHARS = 2000
# Multipart framing and the CSRF field on top of the files themselves.
FORM_OVERHEAD = 64 * 1024


class UploadRefused(Exception):
    """Bad input of an upload: the field and a one-line message naming the file."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Received:
    name: str
    data: bytes


class Originals:
    """The uploaded files the console keeps for re-ingest, one folder per document id, each written atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "console" / "kb-originals"

    def _folder(self, doc_id: str) -> Path:
        if not doc_id.isalnum():  # ids are hex digests; anything else must not become a path
            raise ValueError(f"not a document id: {doc_id!r}")
        return self.root / doc_id

    def keep(self, doc_id: str, name: str, data: bytes) -> None:
        if not doc_id.isalnum():  # see find(): such a document is re-ingested with the CLI
            return
        folder = self._folder(doc_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for other in folder.iterdir():  # the same source uploaded under another file name earlier
            if other.name != name and not other.name.startswith("."):
                other.unlink(missing_ok=True)

    def find(self, doc_id: str) -> Path | None:
        if not doc_id.isalnum():  # not an id this class ever wrote (a store plugin with other ids): no original
            return None
        folder = self._folder(doc_id)
        if not folder.is_dir():
            return None
        return next((f for f in sorted(folder.iterdir()) if not f.name.startswith(".")), None)

    def forget(self, doc_id: str) -> None:
        if doc_id.isalnum():
            shutil.rmtree(self._folder(doc_id), ignore_errors=True)


def too_large(request: Request, limit: int) -> UploadRefused | None:
    """Checked on the declared length before the body is read (and spooled to disk) at all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FILES * limit + FORM_OVERHEAD:
        message = f"the upload is {declared} bytes; at most {MAX_FILES} files of {limit} bytes each"
        return UploadRefused("files", message, 413)
    return None


async def read_upload(request: Request, limit: int) -> list[Received]:
    """The files of the upload form, or UploadRefused naming the first file at fault. Nothing is stored here."""
    form = await request.form()
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    if not uploads:
        raise UploadRefused("files", "choose at least one file")
    if len(uploads) > MAX_FILES:
        raise UploadRefused("files", f"{len(uploads)} files; at most {MAX_FILES} in one upload")
    received: list[Received] = []
    seen: set[str] = set()
    for upload in uploads:
        name = PurePath((upload.filename or "").replace("\\", "/")).name
        if not name or name.startswith("."):
            raise UploadRefused("files", f"file name {upload.filename!r} is not usable")
        if not supported(name):
            known = ", ".join(sorted(PARSERS))
            raise UploadRefused("files", f"{name}: unsupported file type; supported: {known}", 415)
        if name in seen:
            raise UploadRefused("files", f"{name}: chosen twice")
        seen.add(name)
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise UploadRefused("files", f"{name}: larger than the {limit}-byte limit", 413)
        received.append(Received(name, data))
    return received


def prepare_all(kb: KnowledgeBase, files: list[Received]) -> tuple[list[Prepared], list[Outcome]]:
    """Parse and chunk every file before any is stored; one that cannot be parsed refuses the whole upload."""
    prepared: list[Prepared] = []
    unchanged: list[Outcome] = []
    for f in files:
        result = kb.ingestor.prepare(f.data, f.name, source=f"uploads/{f.name}")
        if isinstance(result, Prepared):
            prepared.append(result)
        elif result.status == "unchanged":
            unchanged.append(result)
        else:
            raise UploadRefused("files", result.reason, 422)
    return prepared, unchanged


def commit_all(kb: KnowledgeBase, prepared: list[Prepared]) -> list[Outcome]:
    outcomes = kb.ingestor.commit(prepared) if prepared else []
    kb.store.flush()
    return outcomes


def _document(d: Any, kept: bool) -> dict[str, Any]:
    return {
        "doc_id": d.doc_id,
        "title": d.title,
        "source": d.source,
        "url": d.url or None,
        "chunks": d.chunks,
        "size_bytes": d.size_bytes,
        "ingested_at": datetime.fromtimestamp(d.ingested_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kept": kept,
    }


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    kb = console.deps.knowledge
    originals = Originals(console.data_dir)

    async def page(request: Request, user: User, status: int = 200, **extra: Any) -> Response:
        documents: list[dict[str, Any]] = []
        if kb is not None:
            records = await kb.list_documents()
            documents = [_document(d, originals.find(d.doc_id) is not None) for d in records]
        return console.render(
            request,
            "knowledge.html",
            status,
            user=user,
            kb_enabled=kb is not None,
            documents=documents,
            max_files=MAX_FILES,
            max_bytes=kb.settings.max_file_bytes if kb else 0,
            types=", ".join(sorted(PARSERS)),
            errors=extra.pop("errors", {}),
            **extra,
        )

    @r.get("/knowledge")
    async def knowledge(request: Request, q: str | None = None, done: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        if q is None or kb is None:
            return await page(request, user, done=done)
        query = q.strip()
        if not query:
            return await page(request, user, 400, q=q, errors={"q": "type a question to search for"})
        if len(query) > MAX_QUERY_CHARS:
            return await page(request, user, 400, q=q, errors={"q": f"longer than {MAX_QUERY_CHARS} characters"})
        try:
            hits = await kb.search(query)
        except KnowledgeError as exc:
            return await page(request, user, 503, q=q, errors={"q": f"knowledge store unavailable: {exc}"})
        shown = [
            {"score": round(h.score, 3), "title": h.chunk.title, "source": h.chunk.source, "url": h.chunk.url or None,
             "heading": h.chunk.heading, "text": h.chunk.text}
            for h in hits
        ]  # fmt: skip
        return await page(request, user, q=q, hits=shown, searched=True)

    @r.post("/knowledge/upload")
    async def upload(request: Request) -> Response:
        signed_in = console.user(request)
        if isinstance(signed_in, Response):
            return signed_in
        oversized = too_large(request, kb.settings.max_file_bytes) if kb is not None else None
        if oversized is not None:
            return await page(request, signed_in, oversized.status, errors={oversized.field: oversized.message})
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, _ = gate
        if kb is None:
            return await page(request, user, 409)
        try:
            files = await read_upload(request, kb.settings.max_file_bytes)
            prepared, unchanged = await anyio.to_thread.run_sync(prepare_all, kb, files)
        except UploadRefused as refused:
            return await page(request, user, refused.status, errors={refused.field: refused.message})
        outcomes = await anyio.to_thread.run_sync(commit_all, kb, prepared)
        by_source = {f"uploads/{f.name}": f for f in files}
        for outcome in outcomes:
            if outcome.status in ("added", "updated"):
                kept = by_source[outcome.source]
                await anyio.to_thread.run_sync(originals.keep, outcome.doc_id, kept.name, kept.data)
        results = [{"source": o.source, "status": o.status, "chunks": o.chunks, "reason": o.reason}
                   for o in [*outcomes, *unchanged]]  # fmt: skip
        console.accounts.audit(user.name, "knowledge.upload", ", ".join(sorted(by_source)), None, results)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            problem = "; ".join(o.reason for o in failed)
            return await page(request, user, 503, results=results, errors={"files": problem})
        return await page(request, user, results=results)

    async def find(request: Request, doc_id: str) -> tuple[User, Any] | Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, _ = gate
        doc = await anyio.to_thread.run_sync(kb.find_document, doc_id) if kb is not None else None
        if doc is None or doc.doc_id != doc_id:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        return user, doc

    @r.post("/knowledge/{doc_id}/delete")
    async def delete(request: Request, doc_id: str) -> Response:
        found = await find(request, doc_id)
        if isinstance(found, Response):
            return found
        user, doc = found
        assert kb is not None
        await kb.delete(doc.doc_id)
        await anyio.to_thread.run_sync(originals.forget, doc.doc_id)
        console.accounts.audit(user.name, "knowledge.delete", doc.source, _document(doc, False), None)
        return RedirectResponse(f"{PREFIX}/knowledge?done=deleted", status_code=303)

    @r.post("/knowledge/{doc_id}/reingest")
    async def reingest(request: Request, doc_id: str) -> Response:
        found = await find(request, doc_id)
        if isinstance(found, Response):
            return found
        user, doc = found
        assert kb is not None
        original = originals.find(doc.doc_id)
        if original is None:
            problem = f"{doc.source}: the console does not hold its original; run `ai-assistant kb ingest` on the file"
            return await page(request, user, 409, errors={"reingest": problem})
        data = await anyio.to_thread.run_sync(original.read_bytes)
        outcome = await kb.ingest_bytes(data, original.name, source=doc.source, url=doc.url or None)
        result = {
            "source": outcome.source,
            "status": outcome.status,
            "chunks": outcome.chunks,
            "reason": outcome.reason,
        }
        console.accounts.audit(user.name, "knowledge.reingest", doc.source, _document(doc, True), result)
        if outcome.status in ("skipped", "failed"):
            return await page(request, user, 503 if outcome.status == "failed" else 422,
                              errors={"reingest": outcome.reason})  # fmt: skip
        return await page(request, user, results=[result])

    return r
