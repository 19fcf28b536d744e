"""SQLite backend: the embedded default for one host.

WAL journal and one writer connection. Webhook enqueues run their statements on the event loop and only the disk
flush in a thread; everything else runs in worker threads. Commits do not sync themselves (synchronous=NORMAL):
with `synchronous="FULL"` the store fsyncs the WAL file after each commit, before the caller hears of it, which is
what SQLite's own FULL does in WAL mode, minus the GIL hand-offs of running the statements in a thread
(docs/adr/0005-sqlite-commits-on-the-loop.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from ..messages import ChatTurn, InboundMessage
from .base import Job, QueueStats

T = TypeVar("T")
log = logging.getLogger(__name__)
CLEANUP_INTERVAL_SECONDS = 60.0
# SQLite's own automatic checkpoint would run inside a commit, on the event loop, with two fsyncs: a separate
# connection checkpoints in a thread instead, once the WAL holds this many pages (SQLite's default threshold).
CHECKPOINT_PAGES = 1000


@dataclass(frozen=True, slots=True)
class _Row:
    """A message ready to insert: its de-duplication keys and its jobs row (id, message JSON, enqueued_at)."""

    keys: list[str]
    expires_at: float
    job: tuple[str, str, float]
    ttl: float


_Pending = tuple[_Row, "asyncio.Future[bool]"]


def _job_id() -> str:
    """128 random bits in hex, like uuid4().hex without its system call per id. Job ids are opaque row keys, never
    credentials, so a non-cryptographic generator is enough."""
    return f"{random.getrandbits(128):032x}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    message TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',          -- queued | done | dead
    visible_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    answer TEXT,
    outcome TEXT,
    parts_sent INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    finished_at REAL,
    last_error TEXT,
    lease_token TEXT
);
CREATE INDEX IF NOT EXISTS jobs_visible ON jobs (state, visible_at);
-- The periodic clean-up deletes by expiry; without these it scans every key and job while the ack path waits for it.
CREATE INDEX IF NOT EXISTS dedupe_expiry ON dedupe (expires_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_at);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_conversation ON history (conversation, id);
"""


class _WalFile:
    """A descriptor on the database's WAL file, to fsync what a commit wrote (fsync flushes the file, whichever
    descriptor names it). Re-opened if the file was replaced, so a flush never goes to a file SQLite no longer uses."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            st = os.stat(self.path)
            if self._fd is None or self._inode != (st.st_dev, st.st_ino):
                if self._fd is not None:
                    os.close(self._fd)
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                self._inode = (st.st_dev, st.st_ino)
                dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:  # a new WAL file's directory entry must be durable too
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            fd = self._fd
        os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SQLiteStore:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self._durable = synchronous == "FULL"
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit writes the WAL without syncing it; _commit_done syncs it when the store is FULL.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        self._page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._checkpointer = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._checkpointer.execute("PRAGMA synchronous=NORMAL")  # a checkpoint syncs the WAL and the database
        self._wal = _WalFile(Path(f"{path}-wal"))
        self._checkpointing: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._next_cleanup = 0.0
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        def locked() -> T:
            with self._lock:
                result = fn(self._db)
            if write and self._durable:
                self._wal.sync()  # outside the lock: the loop's next commit need not wait for this flush
            return result

        result = await anyio.to_thread.run_sync(locked)
        if write:
            self._maybe_checkpoint()
        return result

    @staticmethod
    def _tx(db: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = body(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _maybe_checkpoint(self) -> None:
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        try:
            wal_pages = os.stat(self._wal.path).st_size // self._page_size
        except FileNotFoundError:
            return
        if wal_pages >= CHECKPOINT_PAGES:
            self._checkpointing = asyncio.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        """PASSIVE: copies what it can without waiting for, or blocking, the writer."""
        try:
            await anyio.to_thread.run_sync(lambda: self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        except sqlite3.Error as exc:  # a later commit tries again; the WAL only grows meanwhile
            log.warning("WAL checkpoint failed: %s", exc)

    async def enqueue(self, message: InboundMessage, dedupe_ttl: float) -> bool:
        """Group commit: concurrent enqueues share one transaction (one fsync), so throughput under load does not
        pay one disk flush per webhook, while a lone request still commits at once.

        The row is serialised here, on the event loop, so that the writer thread runs almost no Python: every
        statement it executes releases the GIL and must win it back from the busy loop, so fewer, set-based
        statements per batch (json_each) keep the two threads from taking turns (docs/benchmarks.md)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        now = time.time()
        row = _Row(
            keys=message.dedupe_keys(),
            expires_at=now + dedupe_ttl,
            job=(_job_id(), message.model_dump_json(), message.received_at or now),
            ttl=dedupe_ttl,
        )
        self._pending.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [row for row, _ in batch]
            try:
                # On the loop: a batch's few set-based statements take well under a millisecond, and running them
                # here saves a GIL hand-off per statement. The lock waits only for a worker-thread transaction.
                with self._lock:
                    results = self._tx(self._db, lambda db: self._insert(db, rows))  # noqa: B023 (called at once)
                if self._durable:
                    await anyio.to_thread.run_sync(self._wal.sync)  # the only part that waits for the disk
            except Exception as exc:  # rolled back, or not known to be on disk: every caller sees it (-> 503)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), accepted in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(accepted)
            self._maybe_checkpoint()

    def _insert(self, db: sqlite3.Connection, rows: list[_Row]) -> list[bool]:
        now = time.time()
        if now >= self._next_cleanup:  # by the clock, not per N writes: bursts should not pay for it more often
            self._next_cleanup = now + CLEANUP_INTERVAL_SECONDS
            db.execute("DELETE FROM dedupe WHERE expires_at < ?", (now,))
            oldest_ttl = max(row.ttl for row in rows)
            db.execute("DELETE FROM jobs WHERE state = 'done' AND finished_at < ?", (now - oldest_ttl,))
        wanted = [key for row in rows for key in row.keys]
        seen = {
            key
            for (key,) in db.execute(
                "SELECT key FROM dedupe WHERE key IN (SELECT value FROM json_each(?)) AND expires_at >= ?",
                (json.dumps(wanted), now),
            )
        }
        results, marks, jobs = [], [], []
        for row in rows:
            if seen.intersection(row.keys):  # queued before, or earlier in this same batch
                results.append(False)
                continue
            seen.update(row.keys)
            marks += [(key, row.expires_at) for key in row.keys]
            jobs.append(row.job)
            results.append(True)
        if jobs:
            db.execute(
                "INSERT OR REPLACE INTO dedupe (key, expires_at) "
                "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)",
                (json.dumps(marks),),
            )
            db.execute(
                "INSERT INTO jobs (id, message, visible_at, enqueued_at) "
                "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?, json_extract(value, '$[2]') "
                "FROM json_each(?)",
                (now, json.dumps(jobs)),
            )
        return results

    async def remember(self, key: str, ttl: float) -> bool:
        now = time.time()

        def body(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT expires_at FROM dedupe WHERE key = ?", (key,)).fetchone()
            if row and row[0] >= now:
                return False
            db.execute("INSERT OR REPLACE INTO dedupe (key, expires_at) VALUES (?, ?)", (key, now + ttl))
            return True

        return await self._run(lambda db: self._tx(db, body))

    async def forget(self, key: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM dedupe WHERE key = ?", (key,)))

    async def claim(self, lease_seconds: float) -> Job | None:
        now = time.time()

        def body(db: sqlite3.Connection) -> Job | None:
            row = db.execute(
                "SELECT id, message, attempts, answer, outcome, parts_sent, enqueued_at FROM jobs "
                "WHERE state = 'queued' AND visible_at <= ? ORDER BY visible_at, rowid LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            token = uuid.uuid4().hex
            db.execute(
                "UPDATE jobs SET visible_at = ?, attempts = attempts + 1, lease_token = ? WHERE id = ?",
                (now + lease_seconds, token, row[0]),
            )
            return Job(
                id=row[0],
                message=InboundMessage.model_validate_json(row[1]),
                attempts=row[2] + 1,
                answer=row[3],
                outcome=row[4],
                parts_sent=row[5],
                enqueued_at=row[6],
                lease_token=token,
            )

        return await self._run(lambda db: self._tx(db, body))

    async def extend(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        visible = time.time() + lease_seconds
        cur = await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET visible_at = ? WHERE id = ? AND lease_token = ? AND state = 'queued'",
                (visible, job_id, lease_token),
            )
        )
        return cur.rowcount == 1

    async def save_answer(
        self, job_id: str, answer: str, outcome: str, conversation: str, turns: list[ChatTurn], keep_turns: int
    ) -> None:
        now = time.time()

        def body(db: sqlite3.Connection) -> None:
            db.execute("UPDATE jobs SET answer = ?, outcome = ? WHERE id = ?", (answer, outcome, job_id))
            db.executemany(
                "INSERT INTO history (conversation, role, content, at) VALUES (?, ?, ?, ?)",
                [(conversation, t.role, t.content, now) for t in turns],
            )
            db.execute(
                "DELETE FROM history WHERE conversation = ? AND id NOT IN "
                "(SELECT id FROM history WHERE conversation = ? ORDER BY id DESC LIMIT ?)",
                (conversation, conversation, keep_turns * 2),
            )

        await self._run(lambda db: self._tx(db, body))

    async def mark_part_sent(self, job_id: str, parts_sent: int) -> None:
        await self._run(lambda db: db.execute("UPDATE jobs SET parts_sent = ? WHERE id = ?", (parts_sent, job_id)))

    async def complete(self, job_id: str) -> None:
        now = time.time()
        await self._run(
            lambda db: db.execute("UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ?", (now, job_id))
        )

    async def release(self, job_id: str, delay_seconds: float, error: str) -> None:
        visible = time.time() + delay_seconds
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET visible_at = ?, last_error = ? WHERE id = ?", (visible, error[:500], job_id)
            )
        )

    async def dead_letter(self, job_id: str, error: str) -> None:
        now = time.time()
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'dead', finished_at = ?, last_error = ? WHERE id = ?",
                (now, error[:500], job_id),
            )
        )

    async def history(self, conversation: str, limit: int) -> list[ChatTurn]:
        if limit <= 0:
            return []

        def body(db: sqlite3.Connection) -> list[ChatTurn]:
            rows = db.execute(
                "SELECT role, content FROM history WHERE conversation = ? ORDER BY id DESC LIMIT ?",
                (conversation, limit * 2),
            ).fetchall()
            return [ChatTurn(role=r[0], content=r[1]) for r in reversed(rows)]

        return await self._run(body, write=False)

    async def stats(self) -> QueueStats:
        now = time.time()

        def body(db: sqlite3.Connection) -> QueueStats:
            depth, oldest = db.execute("SELECT COUNT(*), MIN(enqueued_at) FROM jobs WHERE state = 'queued'").fetchone()
            return QueueStats(depth=depth, oldest_age_seconds=max(0.0, now - oldest) if oldest else 0.0)

        return await self._run(body, write=False)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone(), write=False)

    async def close(self) -> None:
        if self._checkpointing is not None:
            await self._checkpointing
        self._wal.close()

        def close_both(db: sqlite3.Connection) -> None:
            self._checkpointer.close()
            db.close()

        await self._run(close_both, write=False)

    def dump_jobs(self) -> list[dict[str, object]]:
        """For operators and tests: every job row, newest last."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM jobs ORDER BY rowid")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) | {"message": json.loads(row[1])} for row in cur.fetchall()]
