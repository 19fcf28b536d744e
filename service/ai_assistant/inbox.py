"""A local stand-in for an IM platform's receiving side: it accepts the generic-IM connector's signed answers at
`reply_url`, verifies them, de-duplicates by `webhook-id`, prints them and lets `ai-assistant chat` read them back.

This is the only stand-in in the embedded default: there is no real IM platform on a laptop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Inbox:
    def __init__(self, secret: str, log_file: Path | None = None, echo: Callable[[dict[str, Any]], None] | None = None):
        self._webhook = Webhook(secret)
        self.replies: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._changed = asyncio.Condition()
        self.log_file = log_file
        self.echo = echo

    async def receive(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            self._webhook.verify(body, headers, json_parse=False)
            payload = json.loads(body)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError) as exc:
            return 401, {"error": "signature", "detail": str(exc)}
        msg_id = headers.get("webhook-id", "")
        if msg_id in self._seen:
            return 200, {"ok": True, "duplicate": True}
        self._seen.add(msg_id)
        record = {"webhook_id": msg_id, "received_at": time.time(), **payload}
        async with self._changed:
            self.replies.append(record)
            self._changed.notify_all()
        if self.log_file:
            with self.log_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.echo:
            self.echo(record)
        return 200, {"ok": True}

    async def wait_for(self, event_id: str, wait_seconds: float) -> list[dict[str, Any]]:
        """All parts of the answer to `event_id`, waiting up to `timeout` seconds for the last one."""

        def complete() -> list[dict[str, Any]] | None:
            parts = [r for r in self.replies if r.get("event_id") == event_id]
            if parts and len(parts) >= int(parts[0].get("parts", 1)):
                return sorted(parts, key=lambda r: int(r.get("part", 1)))
            return None

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: complete() is not None), wait_seconds)
        return complete() or [r for r in self.replies if r.get("event_id") == event_id]


def inbox_app(inbox: Inbox, path: str) -> FastAPI:
    app = FastAPI(title="generic-IM inbox (local stand-in)", docs_url=None, redoc_url=None)

    @app.post(path)
    async def receive(request: Request) -> JSONResponse:
        status, body = await inbox.receive(await request.body(), {k.lower(): v for k, v in request.headers.items()})
        return JSONResponse(body, status_code=status)

    @app.get("/inbox/{event_id}")
    async def answer(event_id: str, wait: float = 0.0) -> JSONResponse:
        parts = await inbox.wait_for(event_id, min(max(wait, 0.0), 300.0))
        return JSONResponse({"event_id": event_id, "parts": parts})

    return app
