"""Outbound platform API calls, shared by the IM connectors: a per-connector and per-chat rate limit (aiolimiter's
leaky bucket), bounded retries that honour the platform's own back-off hints, access-token refresh on rejection,
and a metric for every outcome.

Why here and not in the worker: the limits and the meaning of an answer ("HTTP 200 with errcode 42001 means the
token expired") are the platform's; the worker only sees success, DeliveryFailed (not posted: retry the part later)
or DeliveryUncertain (may have been posted: do not send it again).

Only failures that prove the platform did not post are retried here: no connection, a request that never went out
whole, 429 and throttling codes, 500/502/503, a rejected token. A request that went out and got no answer (read
timeout, connection lost, 504) is ambiguous: it is retried only when the call is idempotent (the platform drops a copy
with the same idempotency key, or the call posts nothing), otherwise DeliveryUncertain is raised at once. So retries
here and the worker's retries never multiply into copies the user sees (docs/adr/0003-exactly-once-answers.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import httpx
from aiolimiter import AsyncLimiter
from prometheus_client import Counter
from pydantic import BaseModel, Field

from ..errors import DeliveryFailed, DeliveryUncertain
from ..observability import AMBIGUOUS_SENDS
from .tokens import CachedToken

log = logging.getLogger(__name__)

PLATFORM_CALLS = Counter(
    "ai_assistant_platform_api_calls",
    "Calls to an IM platform's API (token calls included), by outcome: ok, retried, throttled, failed, ambiguous",
    ["connector", "endpoint", "outcome"],
)  # exposed as ai_assistant_platform_api_calls_total


class OutboundOptions(BaseModel):
    """Outbound knobs every IM connector takes; each platform module sets defaults from the platform's limits."""

    rate_limit_per_second: float = Field(5.0, gt=0, description="sends per second for the whole bot")
    chat_rate_limit_per_second: float | None = Field(None, gt=0, description="sends per second into one chat")
    max_attempts: int = Field(3, ge=1, le=10, description="tries per API call before the worker's own retry")
    retry_backoff_seconds: float = Field(0.5, ge=0, le=30)


class Retry(Exception):
    """The platform asked us to try again (throttled or a transient error), maybe after `after` seconds."""

    def __init__(self, why: str, after: float | None = None, *, throttled: bool = False) -> None:
        super().__init__(why)
        self.after = after
        self.throttled = throttled


class TokenRejected(Exception):
    """The platform no longer accepts the cached access token."""


class Fatal(Exception):
    """A definite refusal (bad request, missing permission): retrying the same call cannot help."""


class Ambiguous(Exception):
    """The platform's answer does not say whether it acted on the request (a gateway's 504)."""


# Failures where the platform cannot have acted on the request: no connection was made, or the request never went out
# whole (a write error leaves the body incomplete, and no server acts on an incomplete body). Every other transport
# error (read timeout, connection reset or closed before the answer, a garbled answer) comes after the whole request
# was handed over, so the platform may have posted the message.
NOT_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.LocalProtocolError,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


def may_have_been_sent(exc: httpx.HTTPError) -> bool:
    return not isinstance(exc, NOT_SENT)


# Reads a response: returns the parsed body or raises Retry / TokenRejected / Fatal.
Check = Callable[[httpx.Response], Any]

_MAX_WAIT = 30.0  # never sleep longer than this inside one send: a longer Retry-After goes to the worker


def _seconds(value: str) -> float | None:
    """Retry-After as delay-seconds or as an HTTP-date (RFC 9110 allows both)."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(tz=UTC)).total_seconds())


def retry_after(resp: httpx.Response, *names: str) -> float | None:
    for name in ("retry-after", *names):
        value = resp.headers.get(name)
        if value:
            seconds = _seconds(value)
            if seconds is not None:
                return seconds
    return None


def server_error(resp: httpx.Response) -> NoReturn:
    """A 5xx answer. 500, 502 and 503 are answers from the platform or its gateway refusing the request, so it is
    retried (after Retry-After when given); 504 means a gateway stopped waiting for a backend that may have posted."""
    if resp.status_code == 504:
        raise Ambiguous("HTTP 504")
    raise Retry(f"HTTP {resp.status_code}", retry_after(resp))


def default_check(resp: httpx.Response) -> Any:
    if resp.status_code == 429:
        raise Retry("HTTP 429", retry_after(resp), throttled=True)
    if resp.status_code >= 500:
        server_error(resp)
    if resp.status_code >= 300:
        raise Fatal(f"HTTP {resp.status_code}")
    try:
        return resp.json()
    except ValueError:
        raise Fatal("answer is not JSON") from None


def _leaky_bucket(per_second: float) -> AsyncLimiter:
    # A rate below one per second becomes "one per 1/rate seconds" rather than a bucket smaller than one send.
    return AsyncLimiter(per_second, 1.0) if per_second >= 1 else AsyncLimiter(1, 1 / per_second)


class PlatformAPI:
    def __init__(self, connector: str, options: OutboundOptions, http: Callable[[], httpx.AsyncClient]) -> None:
        self.connector = connector
        self.options = options
        self._http = http
        self._limiter = _leaky_bucket(options.rate_limit_per_second)
        self._chat_limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()

    def _chat_limiter(self, chat: str) -> AsyncLimiter | None:
        rate = self.options.chat_rate_limit_per_second
        if rate is None:
            return None
        limiter = self._chat_limiters.pop(chat, None) or _leaky_bucket(rate)
        self._chat_limiters[chat] = limiter
        while len(self._chat_limiters) > 4096:  # bounded: chats come and go
            self._chat_limiters.popitem(last=False)
        return limiter

    async def call(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        check: Check = default_check,
        chat: str | None = None,
        token: CachedToken | None = None,
        auth: Callable[[str], Mapping[str, Mapping[str, str]]] | None = None,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        limited: bool = True,
        idempotent: bool = False,
    ) -> Any:
        """One logical API call with bounded retries. `auth(token)` returns extra {"headers": ..., "params": ...}.
        `idempotent`: a second copy of this request does no harm (it posts nothing, or the platform drops it by our
        idempotency key), so an ambiguous failure may be retried; otherwise it raises DeliveryUncertain.

        Error messages name the endpoint, never the URL: Telegram and WeCom carry secrets in it."""
        attempts = self.options.max_attempts
        last = "no attempt"
        wait: float | None = None
        for attempt in range(1, attempts + 1):
            req_headers = dict(headers or {})
            req_params = dict(params or {})
            current: str | None = None
            if token is not None and auth is not None:
                current = await token.get()
                extra = auth(current)
                req_headers.update(extra.get("headers", {}))
                req_params.update(extra.get("params", {}))
            if limited:
                chat_limiter = self._chat_limiter(chat) if chat else None
                if chat_limiter is not None:
                    await chat_limiter.acquire()
                await self._limiter.acquire()
            wait = None
            ambiguous = False
            try:
                # params=None, not {}: httpx replaces a URL's own query with any params given (sessionWebhook URLs).
                resp = await self._http().request(
                    method, url, json=json, content=content, params=req_params or None, headers=req_headers
                )
                result = check(resp)
            except httpx.HTTPError as exc:
                ambiguous = may_have_been_sent(exc)
                last = f"{endpoint}: {type(exc).__name__}" + (" after the request went out" if ambiguous else "")
                outcome = "retried"
            except Ambiguous as exc:
                ambiguous = True
                last = f"{endpoint}: {exc}"
                outcome = "retried"
            except Retry as exc:
                last = f"{endpoint}: {exc}"
                outcome = "throttled" if exc.throttled else "retried"
                wait = exc.after
            except TokenRejected as exc:
                last = f"{endpoint}: access token rejected ({exc})"
                outcome = "retried"
                if token is not None and current is not None:
                    token.invalidate(current)
                wait = 0.0
            except Fatal as exc:
                PLATFORM_CALLS.labels(connector=self.connector, endpoint=endpoint, outcome="failed").inc()
                raise DeliveryFailed(f"{self.connector}: {endpoint}: {exc}") from None
            else:
                PLATFORM_CALLS.labels(connector=self.connector, endpoint=endpoint, outcome="ok").inc()
                return result
            if ambiguous:
                handling = "resent" if idempotent else "not_resent"
                AMBIGUOUS_SENDS.labels(connector=self.connector, handling=handling).inc()
                if not idempotent:
                    PLATFORM_CALLS.labels(connector=self.connector, endpoint=endpoint, outcome="ambiguous").inc()
                    log.warning("%s: %s; it may have been posted, so it is not sent again", self.connector, last)
                    raise DeliveryUncertain(f"{self.connector}: {last}; may have been posted, not sent again")
            if attempt == attempts:
                break
            if wait is not None and wait > _MAX_WAIT:
                # Sleeping less than the platform asked and trying again would only be refused again: the worker
                # waits the whole time instead, with the job's lease handed back.
                last = f"{last} (asked to wait {wait:.0f} s)"
                break
            PLATFORM_CALLS.labels(connector=self.connector, endpoint=endpoint, outcome=outcome).inc()
            delay = wait if wait is not None else self.options.retry_backoff_seconds * 2 ** (attempt - 1)
            log.info("%s: %s; try %d of %d in %.1f s", self.connector, last, attempt + 1, attempts, delay)
            await asyncio.sleep(delay)
        PLATFORM_CALLS.labels(connector=self.connector, endpoint=endpoint, outcome="failed").inc()
        tries = f"{attempt} attempts" if attempt > 1 else "1 attempt"
        raise DeliveryFailed(f"{self.connector}: {last} (after {tries})", retry_after=wait)
