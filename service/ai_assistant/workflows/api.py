"""The workflows' admin API (admin token): the loaded workflows and the trace of a message's run."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..messages import InboundMessage
from ..store import StateStore
from .errors import WorkflowError
from .nodes import Services
from .runner import dry_run
from .schema import Workflow, parse

MAX_DOCUMENT_BYTES = 256 * 1024


def summary(flow: Workflow) -> dict[str, Any]:
    trigger = flow.trigger
    return {
        "id": flow.id,
        "version": flow.version,
        "name": flow.name,
        "enabled": flow.enabled,
        "nodes": len(flow.nodes),
        "trigger": trigger.model_dump(exclude={"kind", "id", "name"}, exclude_defaults=True),
    }


def document(flow: Workflow) -> dict[str, Any]:
    return flow.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {"nodes": [
        node.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {"kind": node.kind, "id": node.id}
        for node in flow.nodes
    ]}  # fmt: skip


async def trace(store: StateStore, event_id: str) -> list[dict[str, Any]]:
    return [json.loads(record) for record in await store.workflow_trace(event_id)]


class SampleMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=8000)
    connector: str = "dry-run"
    chat_id: str = "dry-run-chat"
    user_id: str = "dry-run-user"
    is_group: bool = False


class DryRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any] | str  # the workflow, as a mapping or as YAML text
    message: SampleMessage


def _invalid(key: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": "invalid", "key": key, "detail": detail}, status_code=422)


def _document(body: bytes | str) -> Workflow | JSONResponse:
    try:
        data = yaml.safe_load(body.decode("utf-8") if isinstance(body, bytes) else body)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        return _invalid("", "not valid UTF-8 YAML" + (f" at line {mark.line + 1}" if mark is not None else ""))
    try:
        return parse(data, "workflow", os.environ)
    except WorkflowError as exc:
        return _invalid(exc.key, exc.problem)


def workflows_router(
    store: StateStore, flows: list[Workflow], require_admin: Callable[..., Any], services: Services | None = None
) -> APIRouter:
    router = APIRouter(prefix="/admin/api/workflows", tags=["workflows"], dependencies=[Depends(require_admin)])
    by_id = {flow.id: flow for flow in flows}

    @router.get("")
    async def list_workflows() -> dict[str, Any]:
        return {"workflows": [summary(flow) for flow in flows]}

    @router.post("/validate", response_model=None)
    async def validate(request: Request) -> dict[str, Any] | JSONResponse:
        """Validate a document (YAML or JSON body) as the service would at start, without saving it: the editor's
        check before it writes a file. 422 with the node named when it does not validate."""
        body = await request.body()
        if len(body) > MAX_DOCUMENT_BYTES:
            return JSONResponse({"error": "too_large", "detail": f"over {MAX_DOCUMENT_BYTES} bytes"}, 413)
        flow = _document(body)
        if isinstance(flow, JSONResponse):
            return flow
        return {"ok": True, "id": flow.id, "version": flow.version, "nodes": len(flow.nodes)}

    @router.post("/dry-run", response_model=None)
    async def dry(request: Request) -> dict[str, Any] | JSONResponse:
        """Run a document against a sample message and show each node's inputs and outputs (runner.dry_run: only
        GET requests are sent, nothing is posted or recorded). 422 for a document that does not validate."""
        body = await request.body()
        if len(body) > MAX_DOCUMENT_BYTES:
            return JSONResponse({"error": "too_large", "detail": f"over {MAX_DOCUMENT_BYTES} bytes"}, 413)
        try:
            asked = DryRun.model_validate_json(body)
        except ValidationError as exc:  # not JSON at all is a ValidationError too (json_invalid)
            first = exc.errors()[0]
            return _invalid(".".join(str(p) for p in first["loc"]), str(first["msg"]))
        doc = asked.document if isinstance(asked.document, str) else json.dumps(asked.document)
        flow = _document(doc)
        if isinstance(flow, JSONResponse):
            return flow
        sample = asked.message
        msg = InboundMessage(event_id=f"dry-run-{time.time_ns()}", received_at=time.time(), **sample.model_dump())
        answer, outcome, steps = await dry_run(flow, msg, services or Services())
        return {"answer": answer, "outcome": outcome, "steps": [s.__dict__ for s in steps]}

    @router.get("/traces/{event_id}", response_model=None)
    async def show_trace(event_id: str) -> dict[str, Any] | JSONResponse:
        steps = await trace(store, event_id)
        if not steps:
            return JSONResponse({"error": f"no workflow run for event {event_id}", "field": "event_id"}, 404)
        return {"event_id": event_id, "steps": steps}

    @router.get("/{workflow_id}", response_model=None)
    async def show(workflow_id: str) -> dict[str, Any] | JSONResponse:
        flow = by_id.get(workflow_id)
        if flow is None:
            return JSONResponse({"error": f"no workflow with id {workflow_id}", "field": "id"}, status_code=404)
        return document(flow)

    return router
