"""Conversations: what the conversation memory holds, read-only and paged. The page shows exactly the stored turns (the
memory keeps the last few exchanges per chat, memory.keep_turns) and nothing the store does not hold."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..store.base import ConversationIndex
from .store import User
from .web import PREFIX, Console

PAGE_SIZE = 50
MAX_KEY_CHARS = 300
# The memory holds a handful of exchanges per chat; this only bounds one read whatever the configuration.
MAX_TURNS = 10_000


def _page_number(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return 0
    return int(raw) if raw.isdigit() and int(raw) < 1_000_000 else None


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    store = console.deps.store

    async def listing(request: Request, user: User, status: int = 200, page: int = 0, **extra: object) -> Response:
        rows: list[dict[str, object]] = []
        indexed = isinstance(store, ConversationIndex)
        if indexed:
            found = await store.conversations(PAGE_SIZE + 1, page * PAGE_SIZE)  # type: ignore[attr-defined]
            rows = [{"key": c.conversation, "turns": c.turns, "last_at": _when(c.last_at)} for c in found]
        return console.render(
            request, "conversations.html", status, user=user, rows=rows[:PAGE_SIZE], indexed=indexed, page=page,
            more=len(rows) > PAGE_SIZE, errors=extra.pop("errors", {}), **extra,
        )  # fmt: skip

    @r.get("/conversations")
    async def conversations(request: Request, page: str | None = None, key: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        number = _page_number(page)
        if number is None:
            return await listing(request, user, 400, errors={"page": "page must be a whole number from 0"})
        if key is None:
            return await listing(request, user, page=number)
        key = key.strip()
        problem = _key_problem(key)
        if problem:
            return await listing(request, user, 400, page=number, key=key, errors={"key": problem})
        return await turns(request, user, key, 0)

    async def turns(request: Request, user: User, key: str, page: int) -> Response:
        held = await store.history(key, MAX_TURNS)
        start = page * PAGE_SIZE
        return console.render(
            request, "conversation.html", user=user, key=key, turns=held[start : start + PAGE_SIZE],
            first=start + 1, total=len(held), page=page, more=len(held) > start + PAGE_SIZE,
        )  # fmt: skip

    @r.get("/conversations/view")
    async def conversation(request: Request, key: str = "", page: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        number = _page_number(page)
        problem = _key_problem(key.strip()) or (None if number is not None else "page must be a whole number from 0")
        if problem:
            field = "key" if number is not None else "page"
            return await listing(request, user, 400, key=key, errors={field: problem})
        return await turns(request, user, key.strip(), number or 0)

    return r


def _key_problem(key: str) -> str | None:
    if not key:
        return "type a conversation key: <connector>:<chat id>"
    if len(key) > MAX_KEY_CHARS:
        return f"longer than {MAX_KEY_CHARS} characters"
    if ":" not in key:
        return "a conversation key is <connector>:<chat id>"
    return None


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
