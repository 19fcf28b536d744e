"""A cached platform access token, refreshed early under a single-flight lock.

Feishu, DingTalk and WeCom hand out 2-hour tokens and rate-limit the token endpoint itself (WeCom's `gettoken` most of
all), so one token serves every send until shortly before it expires, and a burst of sends that finds it stale makes
exactly one refresh call while the others wait for its result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# (token, lifetime in seconds as the platform reported it)
Fetch = Callable[[], Awaitable[tuple[str, float]]]


class CachedToken:
    def __init__(self, fetch: Fetch, *, refresh_early: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._refresh_early = refresh_early
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetches = 0  # how many times the platform was asked; tests and debugging read it

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at - self._refresh_early

    async def get(self) -> str:
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if self._fresh():  # another task refreshed it while we waited for the lock
                assert self._token is not None
                return self._token
            token, lifetime = await self._fetch()
            self.fetches += 1
            self._token = token
            # A lifetime shorter than the early-refresh margin would make every call refresh: keep half of it instead.
            margin = min(self._refresh_early, lifetime / 2)
            self._expires_at = self._clock() + lifetime - margin + self._refresh_early
            return token

    def invalidate(self, token: str) -> None:
        """The platform rejected `token` (revoked, rotated): forget it unless a newer one already replaced it."""
        if self._token == token:
            self._token = None
            self._expires_at = 0.0
