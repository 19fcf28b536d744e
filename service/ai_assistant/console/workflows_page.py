"""Workflows: the list, the canvas editor (static/workflow-editor.js on the vendored drawflow), and its changes.

Every change is a POST through `console.change` (signed in, CSRF, admin) that validates the whole document as the
service would at start, writes it through workflows.versions (atomic, previous file kept), and is audit-logged. A
document that does not validate writes nothing and comes back with the node named: as JSON (422) to the canvas,
which asks with `Accept: application/json`, or as the page with the error to a plain form. The loader reads the
folder at start, so a saved change is live after the next restart; the page says so."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from pydantic import ValidationError

from ..messages import InboundMessage
from ..workflows.api import MAX_DOCUMENT_BYTES, SampleMessage
from ..workflows.errors import WorkflowError
from ..workflows.nodes import KINDS
from ..workflows.runner import dry_run
from ..workflows.schema import Workflow
from ..workflows.versions import canonical, document, parse_text
from .store import User
from .web import PREFIX, Console

ID = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def kinds() -> dict[str, dict[str, Any]]:
    """What the canvas palette needs per kind: its fixed edge labels (a branch's are its case labels + default)."""
    return {name: {"labels": list(model.labels), "terminal": model.terminal} for name, model in KINDS.items()}


def _valid_id(workflow_id: str) -> bool:
    # The id becomes a file name: only what the schema allows for an id, so no path can be named.
    return ID.fullmatch(workflow_id) is not None


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _refused(exc: WorkflowError) -> dict[str, str]:
    return {"error": "invalid", "file": exc.file, "key": exc.key, "detail": exc.problem, "message": str(exc)}


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    files = console.deps.workflows

    async def page(request: Request, user: User, status: int = 200, **extra: Any) -> Response:
        doc = extra.pop("doc", None)
        rows = await anyio.to_thread.run_sync(files.rows) if files else []
        return console.render(
            request, "workflows.html", status, user=user, available=files is not None, rows=rows,
            kinds=kinds(), doc_json=script_json(doc), doc=doc, error=extra.pop("error", None), **extra,
        )  # fmt: skip

    @r.get("/workflows")
    async def listing(request: Request, saved: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        return await page(request, user, saved=saved)

    @r.get("/workflows/{workflow_id}")
    async def editor(request: Request, workflow_id: str, saved: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        text = await anyio.to_thread.run_sync(files.read, workflow_id) if files and _valid_id(workflow_id) else None
        if files is None or text is None:
            return await page(request, user, 404, error=f"no workflow {workflow_id}")
        try:
            flow = parse_text(text, f"workflows/{workflow_id}.yaml", os.environ)
        except WorkflowError as exc:  # shown, not edited: the canvas could not draw what it cannot parse
            return await page(request, user, 409, error=str(exc), source=text)
        return await page(
            request, user, doc=document(flow), current=workflow_id, saved=saved,
            versions=await anyio.to_thread.run_sync(files.versions, workflow_id),
        )  # fmt: skip

    async def _flow(form: dict[str, str]) -> Workflow:
        body = form.get("document", "")
        if not body.strip():
            raise WorkflowError("workflow", "document", "is empty")
        if len(body.encode()) > MAX_DOCUMENT_BYTES:
            raise WorkflowError("workflow", "document", f"over {MAX_DOCUMENT_BYTES} bytes")
        return parse_text(body, "workflow", os.environ)

    async def refuse(request: Request, user: User, exc: WorkflowError, source: str = "") -> Response:
        if _wants_json(request):
            return JSONResponse(_refused(exc), status_code=422)
        return await page(request, user, 422, error=str(exc), source=source)

    @r.post("/workflows/validate")
    async def validate(request: Request) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, form = gate
        try:
            flow = await _flow(form)
        except WorkflowError as exc:
            return await refuse(request, user, exc, form.get("document", ""))
        return JSONResponse({"ok": True, "id": flow.id, "version": flow.version, "yaml": canonical(flow)})

    @r.post("/workflows/dry-run")
    async def dry(request: Request) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        _, form = gate
        try:
            flow = await _flow(form)
        except WorkflowError as exc:
            return JSONResponse(_refused(exc), status_code=422)
        try:
            sample = SampleMessage(text=form.get("message", ""))
        except ValidationError as exc:
            problem = str(exc.errors()[0]["msg"])
            return JSONResponse({"error": "invalid", "key": "message", "detail": problem}, status_code=422)
        msg = InboundMessage(event_id=f"dry-run-{time.time_ns()}", received_at=time.time(), **sample.model_dump())
        assert files is not None  # console.change passed and the form validated: the page exists
        answer, outcome, steps = await dry_run(flow, msg, files.services)
        return JSONResponse({"answer": answer, "outcome": outcome, "steps": [json_safe(s.__dict__) for s in steps]})

    @r.post("/workflows/save")
    async def save(request: Request) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, form = gate
        if files is None:
            return await page(request, user, 409)
        try:
            flow = await _flow(form)
            before = await anyio.to_thread.run_sync(files.read, flow.id)
            saved = await anyio.to_thread.run_sync(files.save, flow)
        except WorkflowError as exc:
            return await refuse(request, user, exc, form.get("document", ""))
        except OSError as exc:
            return await refuse(request, user, WorkflowError("workflows", "", f"cannot be written: {exc.strerror}"))
        changed = before != saved.text
        console.accounts.audit(
            user.name, "workflow.save", f"workflows/{flow.id}.yaml",
            None if before is None else {"kept_as": saved.kept},
            {"version": flow.version, "enabled": flow.enabled, "nodes": len(flow.nodes), "changed": changed},
        )  # fmt: skip
        target = f"{PREFIX}/workflows/{flow.id}?saved=1"
        if _wants_json(request):
            return JSONResponse({"ok": True, "id": flow.id, "kept": saved.kept, "changed": changed, "url": target})
        return RedirectResponse(target, status_code=303)

    async def change_file(request: Request, workflow_id: str, action: str) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, form = gate
        if files is None:
            return await page(request, user, 409)
        if not _valid_id(workflow_id):
            return await page(request, user, 404, error=f"no workflow {workflow_id[:64]}")
        try:
            if action == "rollback":
                number = form.get("version", "")
                if not number.isdigit():
                    raise WorkflowError(f"workflows/{workflow_id}.yaml", "version", f"{number!r} is not a number")
                saved = await anyio.to_thread.run_sync(files.rollback, workflow_id, int(number), os.environ)
                detail: dict[str, Any] = {"restored": int(number), "kept_as": saved.kept}
            else:
                enabled = action == "enable"
                saved = await anyio.to_thread.run_sync(files.set_enabled, workflow_id, enabled, os.environ)
                detail = {"enabled": enabled, "kept_as": saved.kept}
        except WorkflowError as exc:
            return await page(request, user, 422, error=str(exc))
        except OSError as exc:
            return await page(request, user, 409, error=f"workflows/{workflow_id}.yaml: {exc.strerror}")
        console.accounts.audit(user.name, f"workflow.{action}", f"workflows/{workflow_id}.yaml", None, detail)
        return RedirectResponse(f"{PREFIX}/workflows/{workflow_id}?saved=1", status_code=303)

    @r.post("/workflows/{workflow_id}/enable")
    async def enable(request: Request, workflow_id: str) -> Response:
        return await change_file(request, workflow_id, "enable")

    @r.post("/workflows/{workflow_id}/disable")
    async def disable(request: Request, workflow_id: str) -> Response:
        return await change_file(request, workflow_id, "disable")

    @r.post("/workflows/{workflow_id}/rollback")
    async def rollback(request: Request, workflow_id: str) -> Response:
        return await change_file(request, workflow_id, "rollback")

    return r


def script_json(value: Any) -> Markup:
    """JSON for a <script type="application/json"> block, keys in the document's order (Jinja's tojson sorts them,
    and the canvas writes nodes' fields back in the order it reads them). <, > and & are escaped as in tojson."""
    return htmlsafe_json_dumps(value, ensure_ascii=False)


def json_safe(value: Any) -> Any:
    """A step's inputs and outputs as JSON (a node may output bytes or other objects: shown as their text)."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))
