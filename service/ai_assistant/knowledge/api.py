"""Admin HTTP API of the knowledge base, under /admin/kb. Every route depends on the lead's `require_admin`.

Bad input answers 4xx with a JSON body `{"error": "...", "field": "..."}` naming the form field or query parameter;
nothing is stored for a rejected upload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from .errors import KnowledgeError
from .ingest import Outcome
from .parsers import PARSERS, supported
from .retrieval import KnowledgeBase

# multipart framing and the other form fields on top of the file itself
_FORM_OVERHEAD = 64 * 1024


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {"source": outcome.source, "doc_id": outcome.doc_id, "status": outcome.status, "chunks": outcome.chunks}


def kb_router(kb: KnowledgeBase, require_admin: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/admin/kb", tags=["knowledge"], dependencies=[Depends(require_admin)])
    limit = kb.settings.max_file_bytes

    @router.post("/documents", response_model=None)
    async def upload(
        request: Request,
        file: Annotated[UploadFile | None, File(description="txt, md, html, pdf or docx")] = None,
        source: Annotated[str | None, Form(max_length=500)] = None,
        url: Annotated[str | None, Form(max_length=2000)] = None,
        title: Annotated[str | None, Form(max_length=500)] = None,
    ) -> JSONResponse:
        """Add or replace one document. 201 added, 200 updated or unchanged."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
            return _error(413, "file", f"upload is {declared} bytes; the limit is {limit} bytes")
        if file is None or not file.filename:
            return _error(400, "file", "a multipart file field named 'file' with a file name is required")
        name = PurePath(file.filename.replace("\\", "/")).name
        if not name or name.startswith("."):
            return _error(400, "file", f"file name {file.filename!r} is not usable")
        if not supported(name):
            known = ", ".join(sorted(PARSERS))
            return _error(415, "file", f"{name}: unsupported file type; supported: {known}")
        if url is not None and not url.startswith(("https://", "http://")):
            return _error(400, "url", "must start with http:// or https://")
        data = await file.read(limit + 1)
        if len(data) > limit:
            return _error(413, "file", f"{name}: larger than the {limit}-byte limit")
        try:
            outcome = await kb.ingest_bytes(data, name, source=source or f"uploads/{name}", url=url, title=title)
        except KnowledgeError as exc:
            return _error(503, "file", f"knowledge store unavailable: {exc}")
        if outcome.status == "skipped":
            return _error(422, "file", outcome.reason)
        if outcome.status == "failed":
            return _error(503, "file", outcome.reason)
        return JSONResponse(_outcome(outcome), status_code=201 if outcome.status == "added" else 200)

    @router.get("/documents")
    async def list_documents() -> dict[str, Any]:
        docs = await kb.list_documents()
        return {
            "documents": [
                {
                    "doc_id": d.doc_id,
                    "title": d.title,
                    "source": d.source,
                    "url": d.url or None,
                    "chunks": d.chunks,
                    "size_bytes": d.size_bytes,
                    "ingested_at": d.ingested_at,
                }
                for d in docs
            ]
        }

    @router.delete("/documents/{ref:path}", response_model=None)
    async def delete(ref: str) -> JSONResponse:
        doc = await kb.delete(ref)
        if doc is None:
            return _error(404, "ref", f"no document with id, source or title {ref!r}")
        return JSONResponse({"deleted": doc.doc_id, "source": doc.source, "chunks": doc.chunks})

    @router.get("/search", response_model=None)
    async def search(
        q: Annotated[str | None, Query(description="the question")] = None,
        k: Annotated[str | None, Query(description="number of results, 1-50")] = None,
    ) -> JSONResponse:
        if q is None or not q.strip():
            return _error(400, "q", "a non-empty query parameter 'q' is required")
        if len(q) > 2000:
            return _error(400, "q", "longer than 2000 characters")
        top_k = None
        if k is not None:
            if not k.isdigit() or not 1 <= int(k) <= 50:
                return _error(400, "k", "must be an integer from 1 to 50")
            top_k = int(k)
        hits = await kb.search(q, top_k)
        return JSONResponse(
            {
                "query": q,
                "hits": [
                    {
                        "source": h.chunk.source,
                        "url": h.chunk.url or None,
                        "title": h.chunk.title,
                        "heading": h.chunk.heading,
                        "position": h.chunk.position,
                        "score": round(h.score, 4),
                        "text": h.chunk.text,
                    }
                    for h in hits
                ],
            }
        )

    return router
