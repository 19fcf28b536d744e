"""One contract, two backends: the SQLite store (one host) and the Redis store (several instances) behave the same."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_assistant.messages import ChatTurn, InboundMessage
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


def msg(event_id: str | None = None, aliases: list[str] | None = None, chat: str = "c1") -> InboundMessage:
    return InboundMessage(
        connector="im",
        event_id=event_id or uuid.uuid4().hex,
        chat_id=chat,
        user_id="u",
        text="hi",
        received_at=time.time(),
        alias_ids=aliases or [],
    )


async def test_enqueue_is_deduplicated_on_every_id(store: StateStore) -> None:
    assert await store.enqueue(msg("e1", ["m1"]), 60)
    assert not await store.enqueue(msg("e1"), 60), "same event id"
    assert not await store.enqueue(msg("e2", ["m1"]), 60), "new event id, same message id (Feishu re-push)"
    assert (await store.stats()).depth == 1


async def test_concurrent_deliveries_in_one_batch_are_queued_once(store: StateStore) -> None:
    """Retries that arrive together (SQLite's group commit puts them in one transaction) still give one job, also
    when a re-push shares only its message id; distinct messages in the same burst are all kept."""
    burst = [msg("e1", ["m1"]) for _ in range(5)] + [msg("e2", ["m1"])] + [msg(f"other-{i}") for i in range(20)]
    accepted = await asyncio.gather(*(store.enqueue(m, 60) for m in burst))
    assert sum(accepted[:6]) == 1 and all(accepted[6:])
    assert (await store.stats()).depth == 21
    event_ids = set()
    while (job := await store.claim(30)) is not None:
        event_ids.add(job.message.event_id)
        await store.complete(job.id)
    # Which of e1 and its re-push e2 wins is a race on Redis (several connections); exactly one of them is kept.
    winner = burst[accepted.index(True)].event_id
    assert event_ids == {winner, *(f"other-{i}" for i in range(20))}


async def test_dedupe_expires_after_ttl(store: StateStore) -> None:
    assert await store.enqueue(msg("e1"), 0.2)
    await asyncio.sleep(0.3)
    assert await store.enqueue(msg("e1"), 0.2)


async def test_claim_leases_and_complete_removes(store: StateStore) -> None:
    await store.enqueue(msg("e1"), 60)
    job = await store.claim(lease_seconds=30)
    assert job is not None and job.message.event_id == "e1" and job.attempts == 1
    assert await store.claim(lease_seconds=30) is None, "a leased job is invisible to other workers"
    await store.complete(job.id)
    assert (await store.stats()).depth == 0
    assert await store.claim(lease_seconds=30) is None


async def test_expired_lease_makes_job_visible_again(store: StateStore) -> None:
    await store.enqueue(msg("e1"), 60)
    first = await store.claim(lease_seconds=0.2)
    assert first is not None
    await asyncio.sleep(0.3)
    second = await store.claim(lease_seconds=30)
    assert second is not None and second.id == first.id and second.attempts == 2
    assert second.lease_token != first.lease_token
    assert not await store.extend(first.id, first.lease_token, 30), "the old worker lost the lease"
    assert await store.extend(second.id, second.lease_token, 30)


async def test_answer_checkpoint_and_parts_survive_a_new_claim(store: StateStore) -> None:
    m = msg("e1")
    await store.enqueue(m, 60)
    job = await store.claim(lease_seconds=0.2)
    assert job is not None
    turns = [ChatTurn("user", "hi"), ChatTurn("assistant", "hello")]
    await store.save_answer(job.id, "hello", "answered", m.conversation_key, turns, keep_turns=4)
    await store.mark_part_sent(job.id, 1)
    await asyncio.sleep(0.3)
    again = await store.claim(lease_seconds=30)
    assert again is not None
    assert (again.answer, again.outcome, again.parts_sent) == ("hello", "answered", 1)
    assert await store.history(m.conversation_key, 4) == turns


async def test_history_keeps_the_last_turns_per_conversation(store: StateStore) -> None:
    for i in range(5):
        m = msg(f"e{i}")
        await store.enqueue(m, 60)
        job = await store.claim(30)
        assert job is not None
        turns = [ChatTurn("user", f"q{i}"), ChatTurn("assistant", f"a{i}")]
        await store.save_answer(job.id, f"a{i}", "answered", m.conversation_key, turns, keep_turns=2)
        await store.complete(job.id)
    history = await store.history("im:c1", 2)
    assert [t.content for t in history] == ["q3", "a3", "q4", "a4"]
    assert await store.history("im:other", 2) == []


async def test_release_delays_and_dead_letter_removes(store: StateStore) -> None:
    await store.enqueue(msg("e1"), 60)
    job = await store.claim(30)
    assert job is not None
    await store.release(job.id, 0.3, "reply_url down")
    assert await store.claim(30) is None
    await asyncio.sleep(0.4)
    job = await store.claim(30)
    assert job is not None and job.attempts == 2
    await store.dead_letter(job.id, "gave up")
    assert (await store.stats()).depth == 0
    assert await store.claim(30) is None


async def test_oldest_age_reports_the_waiting_message(store: StateStore) -> None:
    m = msg("e1")
    m.received_at = time.time() - 42
    await store.enqueue(m, 60)
    stats = await store.stats()
    assert stats.depth == 1 and 41 <= stats.oldest_age_seconds < 60


async def test_remember_and_forget(store: StateStore) -> None:
    assert await store.remember("k", 60)
    assert not await store.remember("k", 60)
    await store.forget("k")
    assert await store.remember("k", 60)


async def test_concurrent_claims_never_share_a_job(store: StateStore) -> None:
    for i in range(20):
        await store.enqueue(msg(f"e{i}"), 60)
    claimed = await asyncio.gather(*(store.claim(30) for _ in range(30)))
    ids = [j.id for j in claimed if j is not None]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_a_named_lease_has_one_holder_until_it_expires_or_is_given_back(store: StateStore) -> None:
    assert await store.hold("stream:bot", "a", 30)
    assert not await store.hold("stream:bot", "b", 30)
    assert await store.hold("stream:bot", "a", 0.3)  # the holder renews (here: shortens) its own lease
    await asyncio.sleep(0.5)
    assert await store.hold("stream:bot", "b", 30)  # a's lease ran out: b takes over
    await store.let_go("stream:bot", "a")  # not a's any more: nothing happens
    assert not await store.hold("stream:bot", "a", 30)
    await store.let_go("stream:bot", "b")
    assert await store.hold("stream:bot", "a", 30)
