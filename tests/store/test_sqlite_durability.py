"""What only the SQLite backend promises: with synchronous FULL, nothing is acknowledged before its WAL frames are on
disk, and the WAL is checkpointed off the event loop so it does not grow without bound.

A power cut cannot be staged here; these tests watch the real os.fsync calls (recorded, then passed through) and the
real files instead."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from ai_assistant.messages import InboundMessage
from ai_assistant.store import sqlite as sqlite_store
from ai_assistant.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def msg(text: str = "hi") -> InboundMessage:
    return InboundMessage(
        connector="im", event_id=uuid.uuid4().hex, chat_id="c", user_id="u", text=text, received_at=time.time()
    )


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, float]]:
    """(device, inode, time) of every os.fsync the store makes; the real fsync still runs."""
    calls: list[tuple[int, int, float]] = []
    real = os.fsync

    def recording(fd: int) -> None:
        st = os.fstat(fd)
        real(fd)
        calls.append((st.st_dev, st.st_ino, time.monotonic()))

    monkeypatch.setattr(sqlite_store.os, "fsync", recording)
    return calls


def inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


async def test_full_flushes_the_wal_before_an_enqueue_returns(tmp_path: Path, fsyncs: list) -> None:
    store = SQLiteStore(tmp_path / "state.sqlite3", synchronous="FULL")
    try:
        for _ in range(3):
            before = len(fsyncs)
            assert await store.enqueue(msg(), 60)
            wal = inode(tmp_path / "state.sqlite3-wal")
            assert any((dev, ino) == wal for dev, ino, _ in fsyncs[before:]), "acked without flushing the WAL"
        # The worker's writes (claim, complete) are flushed before they return too.
        job = await store.claim(30)
        assert job is not None
        before = len(fsyncs)
        await store.complete(job.id)
        assert any((dev, ino) == inode(tmp_path / "state.sqlite3-wal") for dev, ino, _ in fsyncs[before:])
    finally:
        await store.close()


async def test_a_burst_shares_one_flush(tmp_path: Path, fsyncs: list) -> None:
    store = SQLiteStore(tmp_path / "state.sqlite3", synchronous="FULL")
    try:
        await store.enqueue(msg(), 60)  # the first flush also syncs the new WAL's directory entry
        before = len(fsyncs)
        accepted = await asyncio.gather(*(store.enqueue(msg(), 60) for _ in range(50)))
        assert all(accepted)
        assert 1 <= len(fsyncs) - before < 50, "group commit: far fewer flushes than messages"
    finally:
        await store.close()


async def test_normal_does_not_flush_per_commit(tmp_path: Path, fsyncs: list) -> None:
    store = SQLiteStore(tmp_path / "state.sqlite3", synchronous="NORMAL")
    try:
        for _ in range(5):
            assert await store.enqueue(msg(), 60)
        assert fsyncs == []
    finally:
        await store.close()


async def test_the_wal_is_checkpointed_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path, synchronous="NORMAL")
    page = 4096
    text = "x" * 3000  # about one page a message
    try:
        for _ in range(6):  # 6 x 500 messages: about three times the checkpoint threshold in WAL pages
            assert all(await asyncio.gather(*(store.enqueue(msg(text), 60) for _ in range(500))))
            await asyncio.sleep(0.05)  # lets a started checkpoint finish in its thread
        wal_pages = os.stat(f"{path}-wal").st_size // page
        assert wal_pages < 2 * sqlite_store.CHECKPOINT_PAGES, f"WAL grew to {wal_pages} pages"
        assert path.stat().st_size > 1000 * page, "checkpoints copied the messages into the database file"
        assert (await store.stats()).depth == 3000
    finally:
        await store.close()
    # Closing checkpoints the rest: another connection sees every message without the WAL.
    assert not Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 3000
