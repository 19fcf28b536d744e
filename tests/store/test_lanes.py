"""Lanes by request type (issue 25, item 3), at the store: each lane is claimed on its own, a chat's messages keep
their order across lanes, and the per-lane depth adds up to the queue's. Both backends (the `store` fixture)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from ai_assistant.messages import InboundMessage
from ai_assistant.store.base import Job, StateStore

pytestmark = pytest.mark.anyio


def msg(event_id: str | None = None, chat: str = "c1") -> InboundMessage:
    return InboundMessage(
        connector="im", event_id=event_id or uuid.uuid4().hex, chat_id=chat, user_id="u", text="hi",
        received_at=time.time(),
    )  # fmt: skip


async def _claim(store: StateStore, *lanes: str) -> Job:
    job = await store.claim(30, lanes) if lanes else await store.claim(30)  # type: ignore[arg-type]
    assert job is not None
    return job


async def test_a_worker_claims_only_from_its_lanes_and_the_job_says_which(store: StateStore) -> None:
    for i in range(5):
        assert await store.enqueue(msg(f"m{i}", chat=f"media-{i}"), 60, lane="media")
    assert await store.enqueue(msg("t1", chat="text-chat"), 60)  # the default lane is text
    assert await store.claim(30, ["long"]) is None, "nothing is queued in the long lane"
    text = await _claim(store, "text")
    assert (text.message.event_id, text.lane) == ("t1", "text"), "the text job is taken before 5 older media jobs"
    media = await _claim(store, "media")
    assert (media.message.event_id, media.lane) == ("m0", "media")
    assert await store.claim(30, ["text"]) is None


async def test_claiming_from_several_lanes_takes_the_oldest_of_them(store: StateStore) -> None:
    assert await store.enqueue(msg("long-1", chat="a"), 60, lane="long")
    await asyncio.sleep(0.01)  # Redis scores by the server's clock: make the order unambiguous
    assert await store.enqueue(msg("text-1", chat="b"), 60, lane="text")
    first = await _claim(store, "text", "long")
    second = await _claim(store, "text", "long")
    assert [first.message.event_id, second.message.event_id] == ["long-1", "text-1"]


async def test_a_chats_order_holds_across_lanes(store: StateStore) -> None:
    """A text message after an image in the same chat waits for the image's answer, though the text lane is free."""
    assert await store.enqueue(msg("photo", chat="c"), 60, lane="media")
    assert await store.enqueue(msg("question", chat="c"), 60, lane="text")
    assert await store.claim(30, ["text"]) is None, "the chat's earlier media message is not answered yet"
    photo = await _claim(store, "media")
    assert await store.claim(30, ["text"]) is None, "still in flight"
    assert await store.complete(photo.id, photo.lease_token)
    question = await _claim(store, "text")
    assert question.message.event_id == "question"


async def test_the_next_job_of_a_chat_follows_a_dead_letter_into_its_own_lane(store: StateStore) -> None:
    assert await store.enqueue(msg("photo", chat="c"), 60, lane="media")
    assert await store.enqueue(msg("question", chat="c"), 60, lane="text")
    photo = await _claim(store, "media")
    assert await store.dead_letter(photo.id, photo.lease_token, "gave up")
    assert await store.claim(30, ["media"]) is None
    question = await _claim(store, "text")
    assert await store.complete(question.id, question.lease_token)
    assert await store.replay(photo.id)
    again = await _claim(store, "media")
    assert (again.message.event_id, again.lane) == ("photo", "media"), "a replay goes back into its lane"


async def test_release_and_extend_keep_a_job_in_its_lane(store: StateStore) -> None:
    assert await store.enqueue(msg("voice", chat="v"), 60, lane="media")
    job = await _claim(store, "media")
    assert await store.extend(job.id, job.lease_token, 30)
    assert await store.release(job.id, job.lease_token, 0, "try again")
    assert await store.claim(30, ["text", "long"]) is None
    again = await _claim(store, "media")
    assert again.id == job.id and again.attempts == 2


async def test_lane_stats_count_each_lane_and_add_up_to_the_queue(store: StateStore) -> None:
    empty = await store.lane_stats()
    assert {lane: s.depth for lane, s in empty.items()} == {"text": 0, "long": 0, "media": 0}
    for i in range(3):
        assert await store.enqueue(msg(f"m{i}", chat=f"m{i}"), 60, lane="media")
    assert await store.enqueue(msg("l0", chat="l0"), 60, lane="long")
    assert await store.enqueue(msg("t0", chat="t0"), 60)
    stats = await store.lane_stats()
    assert {lane: s.depth for lane, s in stats.items()} == {"text": 1, "long": 1, "media": 3}
    assert sum(s.depth for s in stats.values()) == (await store.stats()).depth
    assert stats["media"].oldest_age_seconds >= 0
    job = await _claim(store, "media")
    assert (await store.lane_stats())["media"].depth == 3, "a job in flight is still in its lane's depth"
    assert await store.complete(job.id, job.lease_token)
    assert (await store.lane_stats())["media"].depth == 2


async def test_a_sqlite_file_from_before_lanes_keeps_its_jobs_in_the_text_lane(tmp_path: Path) -> None:
    from ai_assistant.store.sqlite import SQLiteStore

    path = tmp_path / "old.sqlite3"
    s = SQLiteStore(path)
    assert await s.enqueue(msg("old"), 60)
    await s.close()
    with sqlite3.connect(path) as db:  # as a release before lanes left it: no lane column
        db.execute("DROP INDEX jobs_lane")
        db.execute("ALTER TABLE jobs DROP COLUMN lane")
    s = SQLiteStore(path)
    try:
        job = await _claim(s, "text")
        assert (job.message.event_id, job.lane) == ("old", "text")
    finally:
        await s.close()
