"""The workflows' admin API (admin token): the loaded workflows and the trace of a message's run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..store import StateStore
from .errors import WorkflowError
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


def workflows_router(store: StateStore, flows: list[Workflow], require_admin: Callable[..., Any]) -> APIRouter:
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
        try:
            data = yaml.safe_load(body.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            return JSONResponse({"error": "invalid", "key": "", "detail": f"not valid UTF-8 YAML{where}"}, 422)
        try:
            flow = parse(data, "workflow", os.environ)
        except WorkflowError as exc:
            return JSONResponse({"error": "invalid", "key": exc.key, "detail": exc.problem}, status_code=422)
        return {"ok": True, "id": flow.id, "version": flow.version, "nodes": len(flow.nodes)}

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
