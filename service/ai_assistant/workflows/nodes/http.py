"""HTTP request to a business system, SSRF-safe.

Only hosts in the workflow's `settings.http.allow_hosts` are called; a host that resolves to a private, loopback,
link-local or otherwise non-public address is refused unless `settings.http.allow_private` says so (an intranet ERP);
redirects are not followed (a 3xx is an error, so an allowed host cannot bounce the call elsewhere); the response is
read up to `max_response_bytes`; every call has a timeout. A failure takes the node's `error` edge.

The scheme and host of the URL are literal text, never a template, so what a workflow may reach is visible, and
checked, at save. Each call carries an Idempotency-Key derived from the event id, node id and step: a business system
that honours it sees a call repeated after a crash (before its result was checkpointed) as the same call."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
import socket
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

from ..errors import NodeFailed
from .base import NodeBase, Outcome, RunContext

_URL_HEAD = re.compile(r"^(https?)://([^/{}?#\s]+)(/|$)")


def url_host(url: str) -> str | None:
    """The literal host of a URL template (lower case, without port), or None if the scheme or host is templated."""
    head = _URL_HEAD.match(url)
    if head is None:
        return None
    return urlsplit(f"{head.group(1)}://{head.group(2)}/").hostname


def idempotency_key(event_id: str, node_id: str, step: int) -> str:
    return hashlib.sha256(f"{event_id}:{node_id}:{step}".encode()).hexdigest()[:32]


class HttpNode(NodeBase):
    kind: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None  # a template; sent as is (set Content-Type in headers)
    json_body: dict[str, str] | None = Field(default=None, alias="json")  # values are templates; sent as JSON
    map: dict[str, str] = Field(default_factory=dict)  # vars.<name> <- template over `response`
    timeout_seconds: float | None = Field(default=None, gt=0, le=120)
    labels: ClassVar[tuple[str, ...]] = ("next", "error")

    @field_validator("url")
    @classmethod
    def _literal_host(cls, value: str) -> str:
        if url_host(value) is None:
            raise ValueError("must start with a literal http:// or https:// and host (no template there)")
        return value

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        yield "url", self.url, frozenset()
        for name, value in self.headers.items():
            yield f"headers.{name}", value, frozenset({"secrets"})
        if self.body is not None:
            yield "body", self.body, frozenset()
        for name, value in (self.json_body or {}).items():
            yield f"json.{name}", value, frozenset()
        for name, value in self.map.items():
            yield f"map.{name}", value, frozenset({"response"})

    def sets(self) -> set[str]:
        return set(self.map)

    async def run(self, ctx: RunContext) -> Outcome:
        http = ctx.settings.http
        url = ctx.render(self.url)
        inputs: dict[str, Any] = {"method": self.method, "url": url}
        if ctx.services.dry_run and self.method != "GET":  # a dry run must not change anything in a business system
            empty = dict.fromkeys(self.map, "")
            return Outcome(outputs={"dry_run": f"{self.method} not sent in a dry run"}, inputs=inputs, sets=empty)
        try:
            await _check_destination(url, http.allow_hosts, http.allow_private)
            # Secrets go into the request only, never into the trace: header values are not recorded.
            secrets = _Secrets()
            headers = {k: ctx.render(v, secrets=secrets) for k, v in self.headers.items()}
            headers["Idempotency-Key"] = idempotency_key(ctx.message.event_id, self.id, ctx.step)
            inputs["headers"] = sorted(headers)
            content: bytes | None = None
            if self.json_body is not None:
                content = json.dumps({k: ctx.render(v) for k, v in self.json_body.items()}).encode()
                headers.setdefault("Content-Type", "application/json")
            elif self.body is not None:
                content = ctx.render(self.body).encode()
            timeout = self.timeout_seconds or http.timeout_seconds
            status, raw = await _call(self.method, url, headers, content, timeout, http.max_response_bytes)
        except NodeFailed as exc:
            return Outcome(outputs={"error": str(exc)}, label="error", inputs=inputs)
        text = raw.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        response = {"status": status, "json": data, "text": text}
        if status >= 300:
            return Outcome(outputs={"error": f"HTTP {status}", "status": status}, label="error", inputs=inputs)
        try:
            mapped = {name: ctx.render(source, response=response) for name, source in self.map.items()}
        except Exception as exc:  # garbage: the mapping reads fields the response lacks, or it was not JSON
            detail = f"response does not fit the mapping ({type(exc).__name__}: {exc})"
            return Outcome(outputs={"error": detail, "status": status}, label="error", inputs=inputs)
        outputs = {"status": status, "json": data if data is not None else None, **({"vars": mapped} if mapped else {})}
        return Outcome(outputs=outputs, inputs=inputs, sets=mapped)


class _Secrets:
    """`secrets.NAME` in a header template: the environment variable NAME, read when the header is rendered."""

    def __getattr__(self, name: str) -> str:
        import os

        if name.startswith("_") or name not in os.environ:
            raise NodeFailed(f"secret {name} is not set")
        return os.environ[name]


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_multicast


async def _check_destination(url: str, allow_hosts: list[str], allow_private: bool) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise NodeFailed(f"refused: {url!r} is not an http(s) URL")
    if host not in {h.lower() for h in allow_hosts}:
        raise NodeFailed(f"refused: host {host} is not in settings.http.allow_hosts")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise NodeFailed(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not _public(address):
            raise NodeFailed(f"refused: {host} resolves to non-public address {address} (settings.http.allow_private)")


async def _call(
    method: str, url: str, headers: dict[str, str], content: bytes | None, seconds: float, limit: int
) -> tuple[int, bytes]:
    try:
        async with (
            httpx.AsyncClient(follow_redirects=False, timeout=seconds, trust_env=False) as client,
            client.stream(method, url, headers=headers, content=content) as resp,
        ):
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise NodeFailed(f"response larger than {limit} bytes (settings.http.max_response_bytes)")
            return resp.status_code, bytes(body)
    except httpx.TimeoutException:
        raise NodeFailed(f"timed out after {seconds:g} s") from None
    except httpx.HTTPError as exc:
        raise NodeFailed(f"{type(exc).__name__}: {exc}") from None
