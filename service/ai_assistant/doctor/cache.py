"""The answer cache's hit ratio, from the counters every instance keeps in the shared store (pipeline/answer_cache.py),
read without changing anything."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

from ..settings import Settings
from .report import Check, Status, one_line
from .state import read_sqlite

# Below this many lookups a ratio says little; below this ratio the cache costs a store round trip per answer for
# almost nothing (docs/runbooks/doctor.md#answer-cache).
MIN_LOOKUPS = 100
LOW_HIT_RATIO = 0.05


async def cache_check(settings: Settings, data_dir: Path) -> Check:
    name = "answer cache"
    opted = settings.answer_cache.connectors
    if not opted:
        return Check(name, Status.SKIP, "off: no connector in answer_cache.connectors")
    try:
        hits, misses, entries = await _read(settings, data_dir)
    except (sqlite3.Error, OSError) as exc:
        return Check(name, Status.FAIL, f"counters unreadable: {one_line(exc)}", "see the runbook", "answer-cache")
    lookups = hits + misses
    details = {"hits": hits, "misses": misses, "entries": entries, "connectors": list(opted)}
    if not lookups:
        return Check(name, Status.PASS, f"on for {', '.join(opted)}; no lookups yet", details=details)
    ratio = hits / lookups
    details["hit_ratio"] = round(ratio, 3)
    summary = f"hit ratio {ratio:.0%} ({hits} hit(s) of {lookups} lookups), {entries} answer(s) stored"
    if lookups >= MIN_LOOKUPS and ratio < LOW_HIT_RATIO:
        advice = "questions rarely repeat, or ingests and model changes keep invalidating it: see the runbook"
        return Check(name, Status.WARN, summary, advice, "answer-cache", details)
    return Check(name, Status.PASS, summary, details=details)


async def _read(settings: Settings, data_dir: Path) -> tuple[int, int, int]:
    if settings.store.backend == "redis" and settings.store.redis_url is not None:
        return await _read_redis(settings.store.redis_url.get_secret_value())
    path = data_dir / "state.sqlite3"
    if not path.exists():
        return 0, 0, 0
    try:
        _, rows = await asyncio.to_thread(
            read_sqlite,
            path,
            [
                "SELECT COALESCE(SUM(hits), 0), COALESCE(SUM(misses), 0) FROM answer_cache_stats",
                "SELECT COUNT(*) FROM answer_cache",
            ],
        )
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the cache's tables appear with its first lookup
            return 0, 0, 0
        raise
    (hits, misses), (entries,) = rows
    return int(hits), int(misses), int(entries)


async def _read_redis(url: str) -> tuple[int, int, int]:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from ..store.redis import CACHE_INDEX, CACHE_STATS

    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
    try:
        counters: dict[str, str] = await cast(Awaitable[Any], client.hgetall(CACHE_STATS))
        entries = 0
        async for index in client.scan_iter(match=CACHE_INDEX + "*", count=1000):
            entries += int(await client.zcard(index))  # includes entries expired since the last write: an estimate
    except RedisError as exc:
        raise OSError(str(exc)) from exc
    finally:
        await client.aclose()
    hits = sum(int(v) for k, v in counters.items() if k.endswith(":hits"))
    misses = sum(int(v) for k, v in counters.items() if k.endswith(":misses"))
    return hits, misses, entries
