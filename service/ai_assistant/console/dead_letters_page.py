"""Dead letters: list, show, replay and drop, the operations of `ai-assistant dlq` and /admin/dlq (dlq.py), on the same
store. A list shows no message text (dlq.summary); only the page of one dead letter shows what the store holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..dlq import detail, summary
from .web import PREFIX, Console

SHOWN = 200  # newest first; the count says how many more there are


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    store = console.deps.store

    @r.get("/dead-letters")
    async def listing(request: Request, done: str | None = None, id: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        rows = [summary(d) for d in await store.dead_letters(SHOWN)]
        count = await store.dead_letter_count()
        return console.render(
            request, "dead_letters.html", user=user, rows=rows, count=count, shown=SHOWN, done=done, done_id=id
        )

    @r.get("/dead-letters/{job_id}")
    async def show(request: Request, job_id: str) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        dead = await store.get_dead_letter(job_id)
        if dead is None:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        return console.render(request, "dead_letter.html", user=user, dead=detail(dead))

    async def act(request: Request, job_id: str, action: str) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, _ = gate
        dead = await store.get_dead_letter(job_id)
        done = dead is not None and await (store.replay(job_id) if action == "replay" else store.drop(job_id))
        if dead is None or not done:  # gone meanwhile: replayed or dropped by someone else, or never there
            return console.render(request, "message.html", 404, user, message_key="not_found")
        before: dict[str, Any] = summary(dead)
        console.accounts.audit(user.name, f"dead_letter.{action}", job_id, before, {"action": action})
        return RedirectResponse(f"{PREFIX}/dead-letters?done={action}&id={job_id}", status_code=303)

    @r.post("/dead-letters/{job_id}/replay")
    async def replay(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "replay")

    @r.post("/dead-letters/{job_id}/drop")
    async def drop(request: Request, job_id: str) -> Response:
        return await act(request, job_id, "drop")

    return r
