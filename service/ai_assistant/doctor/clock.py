"""Clock skew: the Date header of every answer the checks receive, against each connector's signature window."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ..connectors.base import Connector
from .report import Check, Status

# A Date header has one-second resolution and is stamped somewhere within the round trip: below this, clocks agree.
CLOCK_NOISE_SECONDS = 2.0
# The engine signs nothing; its clock is a second opinion on ours, held to the tightest common window (Slack, Standard
# Webhooks) when no connector names a tighter one.
DEFAULT_SIGNATURE_WINDOW = 300.0
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # every call a check makes: a stuck peer fails its check


class Clocks:
    """Date headers of every answer the checks receive, as (our clock - theirs) in seconds, per source."""

    def __init__(self) -> None:
        self.skew: dict[str, float] = {}
        self.answered: set[str] = set()

    def hook(self, source: str) -> Callable[[httpx.Response], Awaitable[None]]:
        async def on_response(response: httpx.Response) -> None:
            received = time.time()
            self.answered.add(source)
            date = response.headers.get("date")
            if date is None:
                return
            with contextlib.suppress(TypeError, ValueError, IndexError):
                self.skew[source] = received - parsedate_to_datetime(date).timestamp()

        return on_response

    def client(self, source: str, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT, event_hooks={"response": [self.hook(source)]}, **kwargs)


def _clock_check(source: str, skew: float, window: float | None, what: str) -> Check:
    name = f"clock vs {source}"
    direction = "ahead of" if skew > 0 else "behind"
    details = {"skew_seconds": round(skew, 1), "window_seconds": window}
    if abs(skew) <= CLOCK_NOISE_SECONDS:
        return Check(name, Status.PASS, f"in step with {what}'s Date header", details=details)
    summary = f"this host's clock is {abs(skew):.0f} s {direction} {what}'s"
    if window is None:
        return Check(name, Status.PASS, f"{summary} ({what} signs nothing with a timestamp)", details=details)
    if abs(skew) > window:
        return Check(
            name,
            Status.WARN,
            f"{summary}: past the {window:.0f} s signature window, so signed requests are refused as stale",
            "synchronise the clock (timedatectl; chrony or systemd-timesyncd must be active)",
            "clock-skew",
            details,
        )
    return Check(name, Status.PASS, f"{summary}, within the {window:.0f} s signature window", details=details)


def signature_window(connector: Connector) -> float | None:
    """How far a platform's signed timestamp may be from our clock before `verify` refuses it."""
    window = getattr(connector.config, "replay_window_seconds", None)
    if isinstance(window, int | float):
        return float(window)
    if connector.platform == "slack":
        from ..connectors.slack import WINDOW as SLACK_WINDOW

        return float(SLACK_WINDOW)
    if connector.platform == "dingtalk":
        from ..connectors.dingtalk import WINDOW as DINGTALK_WINDOW

        return float(DINGTALK_WINDOW)
    if connector.platform == "generic_im":
        return 300.0  # Standard Webhooks' timestamp tolerance
    return None  # Telegram: a secret token, no timestamp


def clock_checks(clocks: Clocks, connectors: dict[str, Connector]) -> list[Check]:
    windows = {f"connector {n}": signature_window(c) for n, c in connectors.items()}
    known = [w for w in windows.values() if w is not None]
    tightest = min([DEFAULT_SIGNATURE_WINDOW, *known])
    out: list[Check] = []
    for source, skew in clocks.skew.items():
        window = windows.get(source, tightest)
        what = source.removeprefix("connector ")
        out.append(_clock_check(source.removeprefix("connector "), skew, window, what))
    if not out:
        out.append(Check("clock", Status.SKIP, "no answer carried a Date header to compare with"))
    return out
