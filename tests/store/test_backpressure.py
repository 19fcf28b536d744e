"""Issue 16 item 5 on both backends: per-conversation order in claim(), the queue bound, the shed marker, the shared
token buckets behind the quotas, and expiry of everything that grows (history, quotas) while the queue never expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ai_assistant.messages import ChatTurn
from ai_assistant.store.base import SHED_QUOTA, Bucket, Job, QueueFull, StateStore
from tests.store.test_contract import msg

pytestmark = pytest.mark.anyio

StoreFactory = Callable[..., StateStore]


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A store of the parameter's backend with the given constructor options (history_ttl)."""
    made: list[StateStore] = []
    url = None
    if request.param == "redis":
        import redis.asyncio as aioredis

        url = request.getfixturevalue("redis_url")
        await aioredis.from_url(url).flushdb()

    def make(**options: float) -> StateStore:
        if url is None:
            from ai_assistant.store.sqlite import SQLiteStore

            s: StateStore = SQLiteStore(tmp_path / f"state-{len(made)}.sqlite3", **options)  # type: ignore[arg-type]
        else:
            from ai_assistant.store.redis import RedisStore

            s = RedisStore(url, **options)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


async def _claim(store: StateStore, lease: float = 30) -> Job:
    job = await store.claim(lease)
    assert job is not None
    return job


async def test_a_chat_waits_for_its_own_message_in_flight_while_other_chats_go_on(store: StateStore) -> None:
    for event, chat in (("a1", "A"), ("a2", "A"), ("b1", "B")):
        await store.enqueue(msg(event, chat=chat), 60)
    first, second = await _claim(store), await _claim(store)
    assert [first.message.event_id, second.message.event_id] == ["a1", "b1"]
    assert await store.claim(30) is None, "a2 waits while a1 is answered"
    assert await store.complete(first.id, first.lease_token)
    third = await _claim(store)
    assert third.message.event_id == "a2"


async def test_a_released_or_expired_head_keeps_its_place(store: StateStore) -> None:
    await store.enqueue(msg("a1", chat="A"), 60)
    await store.enqueue(msg("a2", chat="A"), 60)
    head = await _claim(store)
    assert await store.release(head.id, head.lease_token, 0.3, "platform down")
    assert await store.claim(30) is None, "a2 must not overtake a1 while a1 waits for its retry"
    await asyncio.sleep(0.4)
    again = await _claim(store, lease=0.2)
    assert again.message.event_id == "a1"
    await asyncio.sleep(0.3)  # the lease runs out (the worker died): a1 again, still not a2
    assert (await _claim(store)).message.event_id == "a1"


async def test_a_dead_letter_lets_the_next_message_of_its_chat_go(store: StateStore) -> None:
    await store.enqueue(msg("a1", chat="A"), 60)
    await store.enqueue(msg("a2", chat="A"), 60)
    head = await _claim(store)
    assert await store.dead_letter(head.id, head.lease_token, "gave up")
    assert (await _claim(store)).message.event_id == "a2"


async def test_the_next_message_of_a_chat_keeps_its_place_among_other_chats(store: StateStore) -> None:
    await store.enqueue(msg("a1", chat="A"), 60)
    await store.enqueue(msg("a2", chat="A"), 60)
    await asyncio.sleep(0.05)
    await store.enqueue(msg("b1", chat="B"), 60)
    head = await _claim(store)
    assert await store.complete(head.id, head.lease_token)
    assert (await _claim(store)).message.event_id == "a2", "a2 came before b1"
    assert (await _claim(store)).message.event_id == "b1"


async def test_a_full_queue_refuses_and_remembers_nothing(store: StateStore) -> None:
    await store.enqueue(msg("e1", chat="A"), 60, max_depth=2)
    await store.enqueue(msg("e2", chat="B"), 60, max_depth=2)
    with pytest.raises(QueueFull):
        await store.enqueue(msg("e3", chat="C"), 60, max_depth=2)
    assert not await store.enqueue(msg("e1", chat="A"), 60, max_depth=2), "a duplicate is a duplicate, not full"
    assert (await store.stats()).depth == 2
    job = await _claim(store)
    assert await store.complete(job.id, job.lease_token)
    assert await store.enqueue(msg("e3", chat="C"), 60, max_depth=2), "the refused message was not remembered"
    assert await store.enqueue(msg("e4", chat="D"), 60), "no bound when none is given"


async def test_concurrent_enqueues_never_exceed_the_bound(store: StateStore) -> None:
    results = await asyncio.gather(
        *(store.enqueue(msg(f"e{i}", chat=f"c{i}"), 60, max_depth=5) for i in range(12)), return_exceptions=True
    )
    assert sum(r is True for r in results) == 5
    assert all(isinstance(r, QueueFull) for r in results if r is not True)
    assert (await store.stats()).depth == 5


async def test_the_shed_mark_and_the_claim_count_come_back_with_the_job(store: StateStore) -> None:
    await store.enqueue(msg("e1", chat="A"), 60, shed=SHED_QUOTA)
    first = await _claim(store)
    assert (first.shed, first.claims, first.attempts) == (SHED_QUOTA, 1, 1)
    assert await store.release(first.id, first.lease_token, 0, "engine wait", count_attempt=False)
    again = await _claim(store)
    assert again.id == first.id and (again.claims, again.attempts) == (2, 1), (
        "an engine wait is a claim, not an attempt"
    )
    await store.enqueue(msg("e2", chat="B"), 60)
    other = await _claim(store)
    assert other.shed is None and other.claims == 1


async def test_a_token_bucket_allows_its_burst_then_refills(store: StateStore) -> None:
    u1, u2 = Bucket("user:u1", 5.0, 3), Bucket("user:u2", 5.0, 3)
    assert [await store.take([u1]) for _ in range(4)] == [None, None, None, "user:u1"]
    assert await store.take([u2]) is None, "buckets are separate"
    await asyncio.sleep(0.3)  # 5 per second: at least one token back
    assert await store.take([u1]) is None


async def test_an_empty_bucket_takes_nothing_from_the_others(store: StateStore) -> None:
    user, chat = Bucket("user:u1", 0.001, 2), Bucket("chat:c1", 0.001, 1)
    assert await store.take([user, chat]) is None
    assert await store.take([user, chat]) == "chat:c1"
    assert await store.take([user]) is None, "the refused take left the user's second token in place"
    assert await store.take([user]) == "user:u1"
    assert await store.take([]) is None


async def test_two_instances_share_one_bucket(make_store: StoreFactory, tmp_path: Path) -> None:
    a = make_store()
    if type(a).__name__ == "SQLiteStore":
        pytest.skip("one SQLite file belongs to one instance; the Redis store is the one shared between instances")
    b = make_store()
    chat = Bucket("chat:c1", 0.001, 4)
    taken = [await (a if i % 2 else b).take([chat]) for i in range(6)]
    assert taken == [None, None, None, None, "chat:c1", "chat:c1"]


async def test_history_expires_after_its_ttl(make_store: StoreFactory) -> None:
    s = make_store(history_ttl=0.5)
    await s.enqueue(msg("e1"), 60)
    job = await _claim(s)
    turns = [ChatTurn("user", "q"), ChatTurn("assistant", "a")]
    assert await s.save_answer(job.id, job.lease_token, "a", "answered", "im:c1", turns, 6)
    assert len(await s.history("im:c1", 6)) == 2
    await asyncio.sleep(0.8)
    assert await s.history("im:c1", 6) == []


async def test_redis_every_key_that_grows_expires_and_the_queue_never_does(make_store: StoreFactory) -> None:
    """What maxmemory-policy relies on (roles/redis): history, dedupe and quota keys carry a TTL; the queue, the
    jobs and the per-chat lists carry none (and a chat's list is gone once its messages are answered)."""
    s = make_store()
    if type(s).__name__ != "RedisStore":
        pytest.skip("TTLs on keys are a Redis matter; the SQLite store deletes expired rows itself (its clean-up)")
    from ai_assistant.store.redis import RedisStore

    assert isinstance(s, RedisStore)
    await s.enqueue(msg("e1", chat="A"), 60)
    await s.enqueue(msg("e2", chat="A"), 60)
    await s.take([Bucket("user:u", 1, 5)])
    await s.remember("feedback:x", 60)
    job = await _claim(s)
    assert await s.save_answer(job.id, job.lease_token, "a", "answered", "im:A", [ChatTurn("user", "q")], 6)
    r = s._r  # the test reads the keys the store wrote
    for key in [k async for k in r.scan_iter("aia:*")]:
        ttl = await r.pttl(key)
        # The queue keys: aia:queue and aia:enqueued, and their per-lane twins (aia:queue:media, aia:enqueued:text).
        if key.startswith(("aia:queue", "aia:enqueued", "aia:job:", "aia:conv:")):
            assert ttl == -1, f"{key} must never expire"
        else:
            assert ttl > 0, f"{key} grows with traffic and must expire"
    assert await s.complete(job.id, job.lease_token)
    second = await _claim(s)
    assert await s.complete(second.id, second.lease_token)
    assert [k async for k in r.scan_iter("aia:conv:*")] == []


async def test_a_sqlite_file_from_before_gets_the_new_columns_and_keeps_its_jobs(tmp_path: Path) -> None:
    import sqlite3

    from ai_assistant.store.sqlite import SQLiteStore

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the jobs table as the first release created it
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, message TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued', "
            "visible_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, answer TEXT, outcome TEXT, "
            "parts_sent INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL, finished_at REAL, last_error TEXT, "
            "lease_token TEXT)"
        )
        for event in ("old1", "old2"):
            db.execute(
                "INSERT INTO jobs (id, message, visible_at, enqueued_at) VALUES (?, ?, 0, 0)",
                (event, msg(event, chat="A").model_dump_json()),
            )
    s = SQLiteStore(path)
    try:
        first = await _claim(s)
        assert first.message.event_id == "old1" and first.shed is None
        assert await s.claim(30) is None, "the old jobs got their conversation: old2 waits for old1"
    finally:
        await s.close()


async def test_sqlite_forgets_full_buckets_oldest_first_a_few_per_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite store's buckets live in memory: each take forgets a few of those that are full again, least
    recently used first, and stops at the first that is not full (a scan of every bucket per message, or per second,
    cost milliseconds past ten thousand users)."""
    from ai_assistant.store import sqlite

    monkeypatch.setattr(sqlite, "FORGET_PER_TAKE", 2)
    store = sqlite.SQLiteStore(tmp_path / "state.db")
    try:
        assert await store.take([]) is None, "no quotas: nothing to take from"
        slow = Bucket("user:slow", 0.001, 2)  # not full again for ~1,000 s
        assert await store.take([slow]) is None
        instant = [Bucket(f"user:{i}", 1e9, 2) for i in range(5)]  # full again at once
        for b in instant:
            assert await store.take([b]) is None
        assert list(store._buckets) == ["user:slow", *[b.name for b in instant]], "the oldest is not full: it stays"
        assert await store.take([slow]) is None  # now the most recent; the instant ones are the oldest
        assert list(store._buckets) == ["user:2", "user:3", "user:4", "user:slow"], "two forgotten per take"
        assert await store.take([Bucket("chat:1", 1e9, 2)]) is None
        assert list(store._buckets) == ["user:4", "user:slow", "chat:1"]
        assert await store.take([Bucket("chat:2", 1e9, 2)]) is None
        assert list(store._buckets) == ["user:slow", "chat:1", "chat:2"], "stops at the first that is not full"
        assert await store.take([slow]) == "user:slow", "a bucket kept keeps its level: its burst of 2 is spent"
    finally:
        await store.close()


async def test_sqlite_splits_a_large_group_commit_and_still_deduplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More acks in flight than one transaction takes (MAX_BATCH) commit in several, in arrival order: a retry in a
    later transaction than its original is still a duplicate, and every message is queued exactly once."""
    from ai_assistant.store import sqlite

    monkeypatch.setattr(sqlite, "MAX_BATCH", 3)
    store = sqlite.SQLiteStore(tmp_path / "state.db")
    try:
        events = [f"e{i}" for i in range(10)] + ["e0", "e4", "e9"]  # three retries, each in a later batch
        accepted = await asyncio.gather(*(store.enqueue(msg(e), 60) for e in events))
        assert accepted == [True] * 10 + [False] * 3
        queued = [job["message"]["event_id"] for job in store.dump_jobs()]  # type: ignore[index]
        assert queued == [f"e{i}" for i in range(10)], "each once, in the order they arrived"
    finally:
        await store.close()
