"""The HTTP edge: raw bytes -> allowlist -> size limit -> connector.verify -> quotas -> de-duplicate + durable enqueue
(bounded) -> ack.

It never waits on a model: the ack goes out as soon as the message is durably queued (IM platforms re-deliver after
1-5 s). Rejections are 4xx with a JSON body and queue nothing; a store outage or a full queue is a 503 so the platform
retries."""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import pydantic_core
from fastapi import FastAPI, Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .connectors.base import Connector
from .errors import Forbidden, MalformedRequest, PayloadTooLarge, RejectedRequest
from .messages import Ack, InboundMessage, RawRequest
from .observability import DUPLICATES, FEEDBACK, REJECTED, REQUESTS, RESPONSE_TIME, SHED, request_id
from .pipeline.lanes import classify
from .settings import LaneSettings, QueueSettings, QuotaSettings
from .store import Bucket, QueueFull, StateStore
from .store.base import SHED_QUOTA, SHED_QUOTA_SILENT

log = logging.getLogger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NO_QUOTAS = QuotaSettings(user_per_minute=0, chat_per_minute=0)


def client_address(scope: Scope, headers: Mapping[str, str], trusted_proxies: Sequence[Network]) -> str | None:
    """The real client: the TCP peer or, behind trusted proxies, the right-most untrusted X-Forwarded-For hop."""
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    if peer is None or not trusted_proxies:
        return peer
    chain = [peer]
    forwarded = headers.get("x-forwarded-for")
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


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body from ASGI messages, refused as soon as it is known to exceed `limit`."""
    declared = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedRequest("the client disconnected before sending the whole body")
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.scope, request.receive, limit)


def _json(body: Any) -> bytes:
    # One call into pydantic-core instead of Starlette's JSONResponse (a json.JSONEncoder built per call, then a
    # Response object): the same compact UTF-8 JSON for a fraction of the ack's time (docs/benchmarks.md).
    return pydantic_core.to_json(body)


def _rendered(ack: Ack) -> tuple[int, bytes, bytes]:
    """Status, Content-Type and body, as Starlette's JSONResponse/PlainTextResponse would send them."""
    if isinstance(ack.body, str):
        media_type = ack.media_type + ("; charset=utf-8" if ack.media_type.startswith("text/") else "")
        return ack.status_code, media_type.encode("latin-1"), ack.body.encode()
    return ack.status_code, b"application/json", _json(ack.body)


def _error(status: int, error: str, detail: str) -> tuple[int, bytes, bytes]:
    return status, b"application/json", _json({"error": error, "detail": detail})


class Admission:
    """What every inbound message passes before it is queued, from a webhook or a long connection alike: the per-user
    and per-chat quotas (token buckets in the store, so they hold across instances) and the queue bound.

    Over a quota the message is still queued, marked (Job.shed), so that its one polite reply goes out through the
    worker's normal, exactly-once delivery path and keeps its place in the chat's order; the worker never asks the
    model for it. A full queue refuses (QueueFull): nothing is acknowledged, so the platform delivers again later."""

    def __init__(
        self,
        store: StateStore,
        queue: QueueSettings,
        quotas: QuotaSettings,
        dedupe_ttl: float,
        lanes: LaneSettings | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.quotas = quotas
        self.dedupe_ttl = dedupe_ttl
        self.lanes = lanes or LaneSettings()

    async def admit(self, message: InboundMessage) -> bool:
        """Queue the message (False: a duplicate, nothing queued). Raises QueueFull."""
        shed = await self._over_quota(message)
        lane = classify(message, self.lanes, shed=shed)  # pipeline/lanes.py: which queue, and so which workers
        try:
            accepted = await self.store.enqueue(
                message, self.dedupe_ttl, shed=shed, max_depth=self.queue.max_depth, lane=lane
            )
        except QueueFull:
            SHED.labels(reason="queue_full").inc()
            log.warning("queue full (queue.max_depth %d): %s refused with 503", self.queue.max_depth, message.event_id)
            raise
        if accepted and shed is not None:
            SHED.labels(reason=shed).inc()
        return accepted

    async def _over_quota(self, message: InboundMessage) -> str | None:
        q = self.quotas
        buckets = []
        if q.user_per_minute:
            buckets.append(Bucket(f"user:{message.connector}:{message.user_id}", q.user_per_minute / 60, q.user_burst))
        if q.chat_per_minute:
            buckets.append(Bucket(f"chat:{message.conversation_key}", q.chat_per_minute / 60, q.chat_burst))
        empty = await self.store.take(buckets)
        if empty is None:
            return None
        # One reply per notice interval and bucket: telling a flooding user once is polite, telling them each time
        # would double the flood.
        first = await self.store.remember(f"quota-notice:{empty}", q.notice_interval_seconds)
        log.info("%s is over its quota (%s)%s", message.event_id, empty, "" if first else "; dropped")
        return SHED_QUOTA if first else SHED_QUOTA_SILENT


class WebhookEndpoint:
    """One instance per connector, mounted at the PATH of the connector's webhook_url. A plain ASGI app: it reads
    the body from ASGI messages and sends its answer as two ASGI messages, with no Request or Response objects in
    between (they cost more than the signature check on the ack path; docs/benchmarks.md)."""

    def __init__(
        self,
        connector: Connector,
        store: StateStore,
        *,
        max_body_bytes: int,
        dedupe_ttl: float,
        trusted_proxies: Sequence[Network],
        admission: Admission | None = None,
    ) -> None:
        self.connector = connector
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.dedupe_ttl = dedupe_ttl
        # Without one (tools and benchmarks that build an endpoint by hand): no quotas, no bound.
        self.admission = admission or Admission(store, QueueSettings(max_depth=0), _NO_QUOTAS, dedupe_ttl)
        self.trusted_proxies = list(trusted_proxies)
        self.allowed = list(connector.config.allowed_cidrs)
        self._succeeded = REQUESTS.labels(status="success")  # bound once: .labels() takes a lock and a dict lookup
        self._failed = REQUESTS.labels(status="error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, media_type, body = await self.handle(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", media_type), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        started = time.perf_counter()
        # ASGI header names are lower-case; Starlette's Headers/URL/QueryParams helpers are left out on purpose.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        # A log-correlation id, not a secret: the Mersenne Twister is enough and far cheaper than uuid4's urandom.
        token = request_id.set(headers.get("x-request-id") or f"{random.getrandbits(64):016x}")
        name = self.connector.name
        try:
            ip = client_address(scope, headers, self.trusted_proxies)
            if self.allowed and not self._allowed(ip):
                raise Forbidden(f"source address {ip} is not in this connector's allowed_cidrs")
            body = await receive_body(scope, receive, self.max_body_bytes)
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
                if not await self.admission.admit(message):
                    DUPLICATES.labels(connector=name).inc()
                    log.info("duplicate delivery of %s acknowledged", message.event_id)
            for feedback in verdict.feedback:
                if await self.store.remember(f"feedback:{name}:{feedback.event_id}", self.dedupe_ttl):
                    FEEDBACK.labels(connector=name, rating=feedback.rating).inc()
            self._succeeded.inc()
            return _rendered(verdict.ack)
        except QueueFull:
            self._failed.inc()
            return _error(503, "busy", "too many messages are waiting; try again later")
        except RejectedRequest as exc:
            REJECTED.labels(connector=name, reason=exc.reason).inc()
            self._failed.inc()
            log.warning("rejected %s request: %s (%s)", name, exc.reason, exc.detail)
            return _error(exc.status_code, exc.reason, exc.detail)
        except Exception:  # the store or a connector bug: never a traceback to the caller, and let the platform retry
            self._failed.inc()
            log.exception("could not accept %s request", name)
            return _error(503, "unavailable", "try again")
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


class AssistantApp(FastAPI):
    """FastAPI for the operations and admin API, with the connectors' webhooks dispatched before FastAPI's stack.

    Why: a webhook request needs none of what sits in front of a FastAPI route (error and exception middleware,
    the async exit stack for dependencies, the per-request OpenTelemetry check, the router's walk), and on the ack
    path that machinery cost more than the webhook's own work: measured in process, 186-240 against 104-126 CPU µs
    per ack (docs/benchmarks.md). WebhookEndpoint catches every error itself (4xx/503 with a JSON body), which is
    what ServerErrorMiddleware would otherwise be there for. The routes stay registered on the router too, so any
    other method or a trailing-slash variant gets FastAPI's usual answer (405, redirect)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._webhooks: dict[tuple[str, str], ASGIApp] = {}

    def add_webhook(self, path: str, handler: ASGIApp, methods: Iterable[str]) -> None:
        methods = list(methods)
        for method in methods:
            self._webhooks[(method, path)] = handler
        self.router.routes.append(Route(path, handler, methods=methods, include_in_schema=False))

    def remove_webhook(self, path: str) -> None:
        """Take a connector's webhook away while serving (console/live.py): the path then answers 404."""
        gone = {id(h) for (_, p), h in self._webhooks.items() if p == path}
        self._webhooks = {key: h for key, h in self._webhooks.items() if key[1] != path}
        self.router.routes[:] = [r for r in self.router.routes if not (isinstance(r, Route) and id(r.endpoint) in gone)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path:
            handler = self._webhooks.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
