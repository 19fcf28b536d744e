"""What every long-connection mode shares (`mode: stream`: Feishu/Lark long connection, DingTalk Stream, Telegram
long polling, Slack Socket Mode): the connection's state for /readyz and the metrics, and the supervisor that
reconnects with jittered back-off.

A connection reports one of: `connecting`, `ok` (events flow), `standby` (another instance holds the connection's
lease; see docs/adr/0072-long-connections.md) or `down: <reason>`. Each failure is one log line and one increment of
`ai_assistant_stream_errors_total{connector, reason}` with a reason from a fixed set, so an alert can tell a wrong
credential from a flaky network.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Literal

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential

from ..observability import STREAM_ERRORS, STREAM_UP

log = logging.getLogger(__name__)

Reason = Literal["unauthorized", "conflict", "malformed", "disconnected", "store", "error"]
REASONS: tuple[Reason, ...] = ("unauthorized", "conflict", "malformed", "disconnected", "store", "error")
BACKOFF_MAX = 60.0  # seconds: a platform outage is retried at least once a minute


class StreamDown(Exception):
    """The connection failed for a known reason; `detail` is safe to log (no token, no URL with a token)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail


class StreamLink:
    """The state of one connector's long connection, read by /readyz and exported as metrics."""

    def __init__(self, connector: str) -> None:
        self.connector = connector
        self.state = "connecting"
        self._up = STREAM_UP.labels(connector=connector)
        self._up.set(0)
        for reason in REASONS:
            STREAM_ERRORS.labels(connector=connector, reason=reason)

    @property
    def ready(self) -> bool:
        return self.state in ("ok", "standby")

    def connected(self) -> None:
        if self.state != "ok":
            log.info("%s: stream connected", self.connector)
        self.state = "ok"
        self._up.set(1)

    def standby(self) -> None:
        if self.state != "standby":
            log.info("%s: another instance holds the stream connection; standing by", self.connector)
        self.state = "standby"
        self._up.set(0)

    def failed(self, reason: Reason, detail: str) -> None:
        """One log line and one metric increment per failure; the state stays down until the next success."""
        STREAM_ERRORS.labels(connector=self.connector, reason=reason).inc()
        log.warning("%s: stream %s: %s", self.connector, reason, detail)
        self.state = f"down: {reason}"
        self._up.set(0)

    def problem(self, reason: Reason, detail: str) -> None:
        """A failure that leaves the connection up (a malformed event that was skipped): logged and counted only."""
        STREAM_ERRORS.labels(connector=self.connector, reason=reason).inc()
        log.warning("%s: stream %s: %s", self.connector, reason, detail)

    def stopped(self) -> None:
        self.state = "connecting"
        self._up.set(0)


async def supervise(link: StreamLink, session: Callable[[], Awaitable[None]], *, backoff: float = 1.0) -> None:
    """Run `session` (one connection, until it ends) forever. A session that fails before its connection came up is
    retried after jittered exponential waits (tenacity, capped at BACKOFF_MAX); one that ends after the connection
    was up starts again after a short jittered wait, so one flap does not leave the next outage at the full back-off.
    Nothing but cancellation ends this task: a bug in one session must not stop the only reader of a bot's events."""

    def before_sleep(state: RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info("%s: reconnecting in %.1f s (attempt %d)", link.connector, wait, state.attempt_number + 1)

    while True:
        async for attempt in AsyncRetrying(
            wait=wait_random_exponential(multiplier=backoff, max=BACKOFF_MAX), before_sleep=before_sleep
        ):
            with attempt:
                was_up = await _one(link, session)
                if not was_up:
                    raise _NeverUp
        await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 (jitter, not a secret)


class _NeverUp(Exception):
    """A session ended before its connection came up: retried with the growing back-off."""


async def _one(link: StreamLink, session: Callable[[], Awaitable[None]]) -> bool:
    """One session; True if its connection had come up."""
    try:
        await session()
    except asyncio.CancelledError:
        raise
    except StreamDown as exc:
        up = link.state == "ok"
        link.failed(exc.reason, exc.detail)
        return up
    except Exception as exc:  # a bug or an unexpected frame: logged with its traceback, then reconnect
        up = link.state == "ok"
        log.exception("%s: stream session failed", link.connector)
        link.failed("error", type(exc).__name__)
        return up
    up = link.state == "ok"  # the platform closed a healthy connection (a disconnect frame): not an error
    link.stopped()
    return up
