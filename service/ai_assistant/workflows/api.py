"""The workflows' admin API (admin token): the loaded workflows and the trace of a message's run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ..store import StateStore
from .schema import Workflow


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
