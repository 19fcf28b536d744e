"""The answer cache's store methods, one contract on both backends: real SQLite and a real redis-server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ai_assistant.store.base import StateStore

pytestmark = pytest.mark.anyio


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


async def test_the_doctor_reads_the_hit_ratio_every_lookup_leaves_in_the_store(
    store: StateStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from ai_assistant.doctor.cache import cache_check
    from ai_assistant.settings import AnswerCacheSettings, Settings, StoreSettings

    backend = "redis" if type(store).__name__ == "RedisStore" else "sqlite"
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    settings = Settings(
        config_dir=tmp_path,
        data_dir=tmp_path,
        store=StoreSettings(backend=backend, redis_url=redis_url),
        answer_cache=AnswerCacheSettings(connectors=["im"]),
    )
    before = await cache_check(settings, tmp_path)
    assert before.status.value == "pass" and "no lookups yet" in before.summary, before
    await store.cache_put("im", "k", "an answer", 600, 10)
    for key in ("k", "k", "k", "absent"):
        await store.cache_get("im", key)
    await store.cache_get("other", "k")  # another connector's lookups count in the same total
    check = await cache_check(settings, tmp_path)
    assert check.status.value == "pass", check
    assert (check.details["hits"], check.details["misses"], check.details["entries"]) == (3, 2, 1)
    assert check.details["hit_ratio"] == 0.6 and "hit ratio 60%" in check.summary


async def test_the_doctor_warns_when_many_lookups_find_almost_nothing(tmp_path: Path) -> None:
    from ai_assistant.doctor.cache import MIN_LOOKUPS, cache_check
    from ai_assistant.settings import AnswerCacheSettings, Settings
    from ai_assistant.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "state.sqlite3")  # the thresholds do not depend on the backend
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path, answer_cache=AnswerCacheSettings(connectors=["im"]))
    try:
        for i in range(MIN_LOOKUPS):
            await store.cache_get("im", f"never-{i}")
    finally:
        await store.close()
    check = await cache_check(settings, tmp_path)
    assert check.status.value == "warn" and check.runbook.endswith("#answer-cache"), check
    off = await cache_check(settings.model_copy(update={"answer_cache": AnswerCacheSettings()}), tmp_path)
    assert off.status.value == "skip"
