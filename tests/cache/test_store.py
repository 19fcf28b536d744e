"""The answer cache's store methods, one contract on both backends: real SQLite and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_assistant.store.base import StateStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        from ai_assistant.store.sqlite import SQLiteStore

        s: StateStore = SQLiteStore(tmp_path / "state.sqlite3")
    else:
        import redis.asyncio as aioredis

        from ai_assistant.store.redis import RedisStore

        url = request.getfixturevalue("redis_url")
        await aioredis.from_url(url).flushdb()
        s = RedisStore(url)
    yield s
    await s.close()


async def test_an_answer_put_is_found_again_for_its_connector_only(store: StateStore) -> None:
    assert await store.cache_get("im", "k1") is None
    await store.cache_put("im", "k1", "Twenty days.", 60, 10)
    assert await store.cache_get("im", "k1") == "Twenty days."
    assert await store.cache_get("other", "k1") is None, "entries are per connector"


async def test_an_entry_is_gone_once_its_ttl_has_passed(store: StateStore) -> None:
    await store.cache_put("im", "short", "soon gone", 0.5, 10)
    await store.cache_put("im", "long", "stays", 600, 10)
    assert await store.cache_get("im", "short") == "soon gone"
    deadline = time.monotonic() + 30
    while await store.cache_get("im", "short") is not None:  # polled: a loaded machine may be slow to get here
        assert time.monotonic() < deadline, "the entry outlived its TTL by 30 s"
        time.sleep(0.1)
    assert await store.cache_get("im", "long") == "stays"


async def test_past_the_size_bound_the_oldest_entries_go(store: StateStore) -> None:
    for i in range(5):
        await store.cache_put("im", f"k{i}", f"answer {i}", 600, 3)
        time.sleep(0.01)  # distinct store times on a coarse clock; the order is what is tested, not the speed
    found = [await store.cache_get("im", f"k{i}") for i in range(5)]
    assert found == [None, None, "answer 2", "answer 3", "answer 4"]
    await store.cache_put("other", "k0", "another connector's", 600, 3)
    assert await store.cache_get("im", "k4") == "answer 4", "one connector's entries never evict another's"


async def test_storing_a_key_again_replaces_its_answer(store: StateStore) -> None:
    await store.cache_put("im", "k", "old", 600, 3)
    await store.cache_put("im", "k", "new", 600, 3)
    assert await store.cache_get("im", "k") == "new"
