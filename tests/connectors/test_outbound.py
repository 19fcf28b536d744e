"""The shared outbound pieces: the access-token cache (single flight, early refresh, invalidation) and the rate limit.
Time is a fake clock here, never a wall-clock assertion."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ai_assistant.connectors.outbound import OutboundOptions, PlatformAPI
from ai_assistant.connectors.tokens import CachedToken
from tests.connectors.standin import PlatformStandIn


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_concurrent_callers_share_one_fetch() -> None:
    calls = 0
    release = asyncio.Event()

    async def fetch() -> tuple[str, float]:
        nonlocal calls
        calls += 1
        await release.wait()  # hold the lock so every caller piles up behind the first
        return f"tok-{calls}", 7200

    cache = CachedToken(fetch)
    waiters = [asyncio.create_task(cache.get()) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert set(await asyncio.gather(*waiters)) == {"tok-1"}
    assert calls == 1


@pytest.mark.anyio
async def test_refreshed_early_and_after_invalidation() -> None:
    clock = Clock()
    n = 0

    async def fetch() -> tuple[str, float]:
        nonlocal n
        n += 1
        return f"tok-{n}", 7200

    cache = CachedToken(fetch, refresh_early=300, clock=clock)
    assert await cache.get() == "tok-1"
    clock.now += 7200 - 301
    assert await cache.get() == "tok-1"  # still more than 5 minutes left
    clock.now += 2
    assert await cache.get() == "tok-2"  # inside the early-refresh margin: a new one before the old one expires
    cache.invalidate("tok-1")  # a stale invalidation does not throw away the newer token
    assert await cache.get() == "tok-2"
    cache.invalidate("tok-2")
    assert await cache.get() == "tok-3"
    assert cache.fetches == 3


@pytest.mark.anyio
async def test_short_lifetimes_do_not_refresh_on_every_call() -> None:
    clock = Clock()
    n = 0

    async def fetch() -> tuple[str, float]:
        nonlocal n
        n += 1
        return f"tok-{n}", 60  # shorter than the 300 s margin

    cache = CachedToken(fetch, refresh_early=300, clock=clock)
    await cache.get()
    clock.now += 29
    await cache.get()
    assert n == 1
    clock.now += 2
    await cache.get()
    assert n == 2


@pytest.mark.anyio
async def test_rate_limit_holds_a_burst_back(platform: PlatformStandIn) -> None:
    """A full bucket makes the next caller wait (checked with has_capacity, not timed). Rates are tiny so that no
    capacity leaks back while the test runs on a slow machine."""
    client = httpx.AsyncClient()
    options = OutboundOptions(rate_limit_per_second=0.02, chat_rate_limit_per_second=0.01)
    api = PlatformAPI("bot", options, lambda: client)
    url = f"{platform.base}/robot/sendBySession"
    try:
        assert api._limiter.has_capacity()
        await api.call("POST", url, endpoint="x", chat="c1")
        chat_bucket = api._chat_limiter("c1")
        assert chat_bucket is not None and not chat_bucket.has_capacity()
        other_chat = api._chat_limiter("c2")
        assert other_chat is not None and other_chat.has_capacity()  # chats have their own buckets ...
        assert not api._limiter.has_capacity()  # ... inside the bot's overall one
        sent = asyncio.create_task(api.call("POST", url, endpoint="x", chat="c2"))
        await asyncio.sleep(0.2)
        assert not sent.done()  # held back by the bot's bucket
        sent.cancel()
    finally:
        await client.aclose()
    assert len(platform.calls) == 1
