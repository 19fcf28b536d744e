"""The HTTP edge: raw bytes -> allowlist -> size limit -> connector.verify -> de-duplicate + durable enqueue -> ack.

It never waits on a model: the ack goes out as soon as the message is durably queued (IM platforms re-deliver after
1-5 s). Rejections are 4xx with a JSON body and queue nothing; a store outage is a 503 so the platform retries."""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .connectors.base import Connector
from .errors import Forbidden, PayloadTooLarge, RejectedRequest
from .messages import Ack, RawRequest
from .observability import DUPLICATES, FEEDBACK, REJECTED, REQUESTS, RESPONSE_TIME, request_id
from .store import StateStore

log = logging.getLogger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request, trusted_proxies: Sequence[Network]) -> str | None:
    """The real client: the TCP peer or, behind trusted proxies, the right-most untrusted X-Forwarded-For hop."""
    peer = request.client.host if request.client else None
    if peer is None or not trusted_proxies:
        return peer
    chain = [peer]
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        chain = [h.strip() for h in forwarded.split(",") if h.strip()] + [peer]
    for hop in reversed(chain):
        try:
            addr = ipaddress.ip_address(hop)
        except ValueError:
            return hop  # garbage in the header: treat as untrusted, and it will match no allowlist
        if not any(addr in net for net in trusted_proxies):
            return hop
    return chain[0]


async def read_body(request: Request, limit: int) -> bytes:
    declared = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    return bytes(body)


def _response(ack: Ack) -> Response:
    if isinstance(ack.body, str):
        return PlainTextResponse(ack.body, status_code=ack.status_code, media_type=ack.media_type)
    return JSONResponse(ack.body, status_code=ack.status_code)


class WebhookEndpoint:
    """One instance per connector, mounted at the PATH of the connector's webhook_url."""

    def __init__(
        self,
        connector: Connector,
        store: StateStore,
        *,
        max_body_bytes: int,
        dedupe_ttl: float,
        trusted_proxies: Sequence[Network],
    ) -> None:
        self.connector = connector
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.dedupe_ttl = dedupe_ttl
        self.trusted_proxies = list(trusted_proxies)
        self.allowed = list(connector.config.allowed_cidrs)
        self._succeeded = REQUESTS.labels(status="success")  # bound once: .labels() takes a lock and a dict lookup
        self._failed = REQUESTS.labels(status="error")

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        # Built from the ASGI scope directly, not through Starlette's Headers/URL/QueryParams objects: on the ack path
        # those helpers cost more than the signature check (docs/benchmarks.md). ASGI header names are lower-case.
        scope = request.scope
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        # A log-correlation id, not a secret: the Mersenne Twister is enough and far cheaper than uuid4's urandom.
        token = request_id.set(headers.get("x-request-id") or f"{random.getrandbits(64):016x}")
        name = self.connector.name
        try:
            ip = client_address(request, self.trusted_proxies)
            if self.allowed and not self._allowed(ip):
                raise Forbidden(f"source address {ip} is not in this connector's allowed_cidrs")
            body = await read_body(request, self.max_body_bytes)
            query_string = scope["query_string"]
            raw = RawRequest(
                method=scope["method"],
                path=scope["path"],
                headers=headers,
                query=dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)) if query_string else {},
                body=body,
                client_ip=ip,
            )
            verdict = await self.connector.verify(raw)
            received = time.time()
            for message in verdict.messages:
                if message.is_group and not message.mentioned and self.connector.config.group_mention_only:
                    continue  # group etiquette: speak only when spoken to
                message.received_at = received
                if not await self.store.enqueue(message, self.dedupe_ttl):
                    DUPLICATES.labels(connector=name).inc()
                    log.info("duplicate delivery of %s acknowledged", message.event_id)
            for feedback in verdict.feedback:
                if await self.store.remember(f"feedback:{name}:{feedback.event_id}", self.dedupe_ttl):
                    FEEDBACK.labels(connector=name, rating=feedback.rating).inc()
            self._succeeded.inc()
            return _response(verdict.ack)
        except RejectedRequest as exc:
            REJECTED.labels(connector=name, reason=exc.reason).inc()
            self._failed.inc()
            log.warning("rejected %s request: %s (%s)", name, exc.reason, exc.detail)
            return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=exc.status_code)
        except Exception:  # the store or a connector bug: never a traceback to the caller, and let the platform retry
            self._failed.inc()
            log.exception("could not accept %s request", name)
            return JSONResponse({"error": "unavailable", "detail": "try again"}, status_code=503)
        finally:
            RESPONSE_TIME.observe(time.perf_counter() - started)
            request_id.reset(token)

    def _allowed(self, ip: str | None) -> bool:
        if ip is None:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allowed)


Handler = Callable[[Request], Awaitable[Response]]


class AssistantApp(FastAPI):
    """FastAPI for the operations and admin API, with the connectors' webhooks dispatched before FastAPI's stack.

    Why: a webhook request needs none of what sits in front of a FastAPI route (error and exception middleware,
    the async exit stack for dependencies, the per-request OpenTelemetry check, the router's walk), and on the ack
    path that machinery cost more than the webhook's own work: measured in process, 186-240 against 104-126 CPU µs
    per ack (docs/benchmarks.md). WebhookEndpoint.handle catches every error itself (4xx/503 with a JSON body), which
    is what ServerErrorMiddleware would otherwise be there for. The routes stay registered on the router too, so any
    other method or a trailing-slash variant gets FastAPI's usual answer (405, redirect)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._webhooks: dict[tuple[str, str], Handler] = {}

    def add_webhook(self, path: str, handler: Handler, methods: Iterable[str]) -> None:
        methods = list(methods)
        for method in methods:
            self._webhooks[(method, path)] = handler
        self.add_route(path, handler, methods=methods, include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path:
            handler = self._webhooks.get((scope["method"], scope["path"]))
            if handler is not None:
                scope["app"] = self
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
