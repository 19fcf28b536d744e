"""SQLite backend: the embedded default for one host. WAL journal; one connection, used from one thread of its own."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..messages import ChatTurn, InboundMessage
from .base import (
    LANES,
    WORKFLOW_TRACE_RETENTION_SECONDS,
    Bucket,
    ConversationSummary,
    DeadLetter,
    Job,
    Lane,
    QueueFull,
    QueueStats,
)

T = TypeVar("T")
CLEANUP_INTERVAL_SECONDS = 60.0
# Rows per group-committed transaction: 7 bound parameters a row stays far below SQLite's 32,766 per statement.
MAX_BATCH = 1000
# take() forgets at most this many buckets that are full again per call, least recently used first (see take()).
FORGET_PER_TAKE = 4


@dataclass(frozen=True, slots=True)
class _Row:
    """A message ready to insert: its de-duplication keys and its jobs row (id, message JSON, enqueued_at,
    conversation, shed, lane)."""

    keys: list[str]
    expires_at: float
    job: tuple[str, str, float, str, str | None, str]
    ttl: float
    max_depth: int


_Pending = tuple[_Row, "asyncio.Future[bool | None]"]  # None: refused, the queue is full


def _refilled(bucket: Bucket, tokens: float, elapsed: float) -> float:
    return min(float(bucket.burst), tokens + max(0.0, elapsed) * bucket.per_second)


def _lane(value: object) -> Lane:
    """A lane read back from the database; a name this version does not know (a newer one wrote it) is text."""
    return next((lane for lane in LANES if lane == value), "text")


# The group commit's statements, completed with placeholders only (_marks): every value is a bound parameter.
_SEEN = "SELECT key FROM dedupe WHERE key IN ({keys}) AND expires_at >= ?"
_MARK = "INSERT OR REPLACE INTO dedupe (key, expires_at) VALUES "
_QUEUE = "INSERT INTO jobs (id, message, enqueued_at, conversation, shed, lane, visible_at) VALUES "


def _marks(rows: int, columns: int) -> str:
    """`(?, ?), (?, ?)`: placeholders for a multi-row VALUES list, or `?, ?` for IN (columns=1). SQLite allows 32,766
    bound parameters a statement; a batch has at most MAX_BATCH rows."""
    one = "?" if columns == 1 else "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)


def _job_id() -> str:
    """128 random bits in hex, like uuid4().hex without its system call per id. Job ids are opaque row keys, never
    credentials, so a non-cryptographic generator is enough."""
    return f"{random.getrandbits(128):032x}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
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
    lease_token TEXT,
    conversation TEXT,                              -- connector:chat, for per-conversation order in claim()
    shed TEXT,                                      -- Job.shed
    claims INTEGER NOT NULL DEFAULT 0               -- Job.claims
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

# Columns added after the first release: a database file from before gets them on open (the job's conversation is
# filled in from its message), then the indexes that use them.
_ADDED_COLUMNS = {
    "conversation": "TEXT",
    "shed": "TEXT",
    "claims": "INTEGER NOT NULL DEFAULT 0",
    "reply_ref": "TEXT",  # pipeline/progressive.py
    "lane": "TEXT NOT NULL DEFAULT 'text'",  # Job.lane; jobs queued before lanes existed are text
}
_AFTER_MIGRATION = """
UPDATE jobs SET conversation = json_extract(message, '$.connector') || ':' || json_extract(message, '$.chat_id')
WHERE conversation IS NULL;
CREATE INDEX IF NOT EXISTS jobs_conversation ON jobs (conversation, state);
CREATE INDEX IF NOT EXISTS history_at ON history (at);
CREATE INDEX IF NOT EXISTS jobs_lane ON jobs (state, lane, visible_at);
"""


# Workflow checkpoints and traces (workflows/runner.py): one row per node a run finished.
_WORKFLOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflow_steps (
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    record TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, step)
);
CREATE INDEX IF NOT EXISTS workflow_steps_event ON workflow_steps (event_id);
CREATE INDEX IF NOT EXISTS workflow_steps_at ON workflow_steps (at);
"""


class SQLiteStore:
    def __init__(self, path: Path, synchronous: str = "FULL", history_ttl: float = 7 * 24 * 3600) -> None:
        self.path = path
        self.history_ttl = history_ttl
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._db.executescript(_WORKFLOW_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        self._db.executescript(_AFTER_MIGRATION)
        self._lock = threading.Lock()  # the executor's thread vs dump_jobs() called from another thread
        # One thread for every statement, in submission order: SQLite has one writer anyway, and a one-thread
        # executor hands work over through a C queue (SimpleQueue), which on the ack path costs less than a thread
        # pool with a capacity limiter (anyio.to_thread) in front of a lock (docs/benchmarks.md).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._next_cleanup = 0.0
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # take(): name -> (tokens, monotonic time of the last take, the bucket), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float, Bucket]] = OrderedDict()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._executor, locked)

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

    async def enqueue(
        self,
        message: InboundMessage,
        dedupe_ttl: float,
        *,
        shed: str | None = None,
        max_depth: int = 0,
        lane: Lane = "text",
    ) -> bool:
        """Group commit: concurrent enqueues share one transaction (one fsync), so throughput under load does not
        pay one disk flush per webhook, while a lone request still commits at once.

        The row is serialised here, on the event loop, so that the writer thread runs almost no Python: every
        statement it executes releases the GIL and must win it back from the busy loop, so a batch is three
        statements whatever its size, each with one multi-row VALUES list of bound parameters (docs/benchmarks.md).
        Earlier they were JSON arrays unpacked by json_each, which cost escaping every message into JSON text on
        the loop and parsing it again in SQLite."""
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        now = time.time()
        row = _Row(
            keys=message.dedupe_keys(),
            expires_at=now + dedupe_ttl,
            job=(
                _job_id(),
                message.model_dump_json(),
                message.received_at or now,
                message.conversation_key,
                shed,
                lane,
            ),
            ttl=dedupe_ttl,
            max_depth=max_depth,
        )
        self._pending.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        accepted = await future
        if accepted is None:
            raise QueueFull(f"{max_depth} messages are queued (queue.max_depth)")
        return accepted

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            rows = [row for row, _ in batch]
            try:
                results = await self._run(functools.partial(self._tx, body=functools.partial(self._insert, rows=rows)))
            except Exception as exc:  # the whole transaction rolled back: every caller sees the failure (-> 503)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), accepted in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(accepted)

    def _insert(self, db: sqlite3.Connection, rows: list[_Row]) -> list[bool | None]:
        now = time.time()
        if now >= self._next_cleanup:  # by the clock, not per N writes: bursts should not pay for it more often
            self._next_cleanup = now + CLEANUP_INTERVAL_SECONDS
            db.execute("DELETE FROM dedupe WHERE expires_at < ?", (now,))
            oldest_ttl = max(row.ttl for row in rows)
            db.execute("DELETE FROM jobs WHERE state = 'done' AND finished_at < ?", (now - oldest_ttl,))
            db.execute("DELETE FROM history WHERE at < ?", (now - self.history_ttl,))
        depth = None
        if any(row.max_depth for row in rows):
            (depth,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
        wanted = [key for row in rows for key in row.keys]
        seen = {key for (key,) in db.execute(_SEEN.format(keys=_marks(len(wanted), 1)), (*wanted, now))}
        results: list[bool | None] = []
        marks, jobs = [], []
        for row in rows:
            if seen.intersection(row.keys):  # queued before, or earlier in this same batch
                results.append(False)
                continue
            if depth is not None and row.max_depth and depth >= row.max_depth:
                results.append(None)
                continue
            if depth is not None:
                depth += 1
            seen.update(row.keys)
            marks += [(key, row.expires_at) for key in row.keys]
            jobs.append(row.job)
            results.append(True)
        if jobs:
            db.execute(
                _MARK + _marks(len(marks), 2),
                [value for mark in marks for value in mark],
            )
            db.execute(
                _QUEUE + _marks(len(jobs), 7),
                [value for job in jobs for value in (*job, now)],
            )
        return results

    async def take(self, buckets: Sequence[Bucket]) -> str | None:
        if not buckets:
            return None
        now = time.monotonic()
        held = self._buckets
        levels = []
        for b in buckets:
            tokens, at, _ = held.get(b.name, (float(b.burst), now, b))
            tokens = _refilled(b, tokens, now - at)
            if tokens < 1:
                return b.name
            levels.append(tokens - 1)
        for b, tokens in zip(buckets, levels, strict=True):
            held[b.name] = (tokens, now, b)
            held.move_to_end(b.name)
        # Forget the buckets that are full again (the same as none), from the least recently used end, a few per call
        # and only while the oldest is full: constant work per message however many users there are (a sweep of
        # every bucket took milliseconds of the ack path past ten thousand users, docs/benchmarks.md). Memory then
        # holds the users of the last refill period (burst / rate), which is what it needs to. The loop ends at the
        # latest at this call's own buckets, which were just taken from and so are not full.
        for _ in range(FORGET_PER_TAKE):
            name, (tokens, at, b) = next(iter(held.items()))
            if _refilled(b, tokens, now - at) < b.burst:
                break
            del held[name]
        return None

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

    async def hold(self, key: str, holder: str, ttl: float) -> bool:
        now = time.time()

        def body(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT holder, expires_at FROM leases WHERE key = ?", (key,)).fetchone()
            if row and row[0] != holder and row[1] >= now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO leases (key, holder, expires_at) VALUES (?, ?, ?)", (key, holder, now + ttl)
            )
            return True

        return await self._run(lambda db: self._tx(db, body))

    async def let_go(self, key: str, holder: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM leases WHERE key = ? AND holder = ?", (key, holder)))

    async def claim(self, lease_seconds: float, lanes: Sequence[Lane] = LANES) -> Job | None:
        now = time.time()
        wanted = json.dumps(list(lanes))

        def body(db: sqlite3.Connection) -> Job | None:
            # A job waits while an older job of its conversation is still queued, in any lane: in flight (leased),
            # waiting for a retry, or simply ahead of it.
            row = db.execute(
                "SELECT id, message, attempts, answer, outcome, parts_sent, enqueued_at, shed, claims, reply_ref, lane "
                "FROM jobs j "
                "WHERE state = 'queued' AND lane IN (SELECT value FROM json_each(?)) AND visible_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM jobs o "
                "WHERE o.conversation = j.conversation AND o.state = 'queued' AND o.rowid < j.rowid) "
                "ORDER BY visible_at, rowid LIMIT 1",
                (wanted, now),
            ).fetchone()
            if row is None:
                return None
            token = uuid.uuid4().hex
            db.execute(
                "UPDATE jobs SET visible_at = ?, attempts = attempts + 1, claims = claims + 1, lease_token = ? "
                "WHERE id = ?",
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
                shed=row[7],
                claims=row[8] + 1,
                reply_ref=row[9],
                lane=_lane(row[10]),
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

    # Fencing: each job write names the lease token it was claimed with; a write whose token is no longer the job's
    # (claimed again since, finished, dead) changes nothing and returns False.
    _HELD = "id = ? AND lease_token = ? AND state = 'queued'"

    async def save_answer(
        self,
        job_id: str,
        lease_token: str,
        answer: str,
        outcome: str,
        conversation: str,
        turns: list[ChatTurn],
        keep_turns: int,
    ) -> bool:
        now = time.time()

        def body(db: sqlite3.Connection) -> bool:
            held = db.execute(
                f"SELECT answer IS NOT NULL FROM jobs WHERE {self._HELD}",  # noqa: S608 (constant text)
                (job_id, lease_token),
            ).fetchone()
            if held is None:
                return False
            if held[0]:  # a retry of a checkpoint that landed: the memory has this exchange already
                return True
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
            return True

        return await self._run(lambda db: self._tx(db, body))

    async def _fenced(self, sql: str, args: tuple[object, ...]) -> bool:
        cur = await self._run(lambda db: db.execute(f"{sql} WHERE {self._HELD}", args))
        return cur.rowcount == 1

    async def mark_part_sent(self, job_id: str, lease_token: str, parts_sent: int) -> bool:
        return await self._fenced("UPDATE jobs SET parts_sent = ?", (parts_sent, job_id, lease_token))

    async def save_reply_ref(self, job_id: str, lease_token: str, reply_ref: str) -> bool:
        return await self._fenced("UPDATE jobs SET reply_ref = ?", (reply_ref, job_id, lease_token))

    async def complete(self, job_id: str, lease_token: str) -> bool:
        return await self._fenced("UPDATE jobs SET state = 'done', finished_at = ?", (time.time(), job_id, lease_token))

    async def release(
        self, job_id: str, lease_token: str, delay_seconds: float, error: str, *, count_attempt: bool = True
    ) -> bool:
        return await self._fenced(
            "UPDATE jobs SET visible_at = ?, last_error = ?, attempts = attempts - ?",
            (time.time() + delay_seconds, error[:500], 0 if count_attempt else 1, job_id, lease_token),
        )

    async def dead_letter(self, job_id: str, lease_token: str, error: str) -> bool:
        return await self._fenced(
            "UPDATE jobs SET state = 'dead', finished_at = ?, last_error = ?",
            (time.time(), error[:500], job_id, lease_token),
        )

    _DEAD_COLUMNS = "id, message, attempts, COALESCE(last_error, ''), COALESCE(finished_at, 0), answer, parts_sent"

    @staticmethod
    def _dead(row: tuple[object, ...]) -> DeadLetter:
        return DeadLetter(
            id=str(row[0]),
            message=InboundMessage.model_validate_json(str(row[1])),
            attempts=int(str(row[2])),
            last_error=str(row[3]),
            dead_at=float(str(row[4])),
            answer=None if row[5] is None else str(row[5]),
            parts_sent=int(str(row[6])),
        )

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {self._DEAD_COLUMNS} FROM jobs WHERE state = 'dead' "  # noqa: S608 (constant text)
                "ORDER BY finished_at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [self._dead(row) for row in rows]

    async def dead_letter_count(self) -> int:
        row = await self._run(lambda db: db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'dead'").fetchone())
        return int(row[0])

    async def get_dead_letter(self, job_id: str) -> DeadLetter | None:
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {self._DEAD_COLUMNS} FROM jobs WHERE state = 'dead' AND id = ?",  # noqa: S608 (constant text)
                (job_id,),
            ).fetchone()
        )
        return None if row is None else self._dead(row)

    async def replay(self, job_id: str) -> bool:
        cur = await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', visible_at = ?, attempts = 0, lease_token = NULL, "
                "finished_at = NULL WHERE id = ? AND state = 'dead'",
                (time.time(), job_id),
            )
        )
        return cur.rowcount == 1

    async def drop(self, job_id: str) -> bool:
        cur = await self._run(lambda db: db.execute("DELETE FROM jobs WHERE id = ? AND state = 'dead'", (job_id,)))
        return cur.rowcount == 1

    async def history(self, conversation: str, limit: int) -> list[ChatTurn]:
        if limit <= 0:
            return []

        def body(db: sqlite3.Connection) -> list[ChatTurn]:
            rows = db.execute(
                "SELECT role, content FROM history WHERE conversation = ? AND at >= ? ORDER BY id DESC LIMIT ?",
                (conversation, time.time() - self.history_ttl, limit * 2),
            ).fetchall()
            return [ChatTurn(role=r[0], content=r[1]) for r in reversed(rows)]

        return await self._run(body)

    async def conversations(self, limit: int, offset: int) -> list[ConversationSummary]:
        """Most recently active first (ConversationIndex)."""

        def body(db: sqlite3.Connection) -> list[ConversationSummary]:
            rows = db.execute(
                "SELECT conversation, COUNT(*), MAX(at) FROM history GROUP BY conversation "
                "ORDER BY MAX(at) DESC, conversation LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            return [ConversationSummary(r[0], int(r[1]), float(r[2])) for r in rows]

        return await self._run(body)

    async def stats(self) -> QueueStats:
        now = time.time()

        def body(db: sqlite3.Connection) -> QueueStats:
            depth, oldest = db.execute("SELECT COUNT(*), MIN(enqueued_at) FROM jobs WHERE state = 'queued'").fetchone()
            return QueueStats(depth=depth, oldest_age_seconds=max(0.0, now - oldest) if oldest else 0.0)

        return await self._run(body)

    async def lane_stats(self) -> dict[Lane, QueueStats]:
        now = time.time()

        def body(db: sqlite3.Connection) -> dict[Lane, QueueStats]:
            rows = db.execute(
                "SELECT lane, COUNT(*), MIN(enqueued_at) FROM jobs WHERE state = 'queued' GROUP BY lane"
            ).fetchall()
            out = {lane: QueueStats(0, 0.0) for lane in LANES}
            for lane, depth, oldest in rows:
                out[_lane(lane)] = QueueStats(depth=depth, oldest_age_seconds=max(0.0, now - oldest))
            return out

        return await self._run(body)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._run(lambda db: db.close())
        self._executor.shutdown(wait=False)

    def dump_jobs(self) -> list[dict[str, object]]:
        """For operators and tests: every job row, newest last."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM jobs ORDER BY rowid")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) | {"message": json.loads(row[1])} for row in cur.fetchall()]

    # -- Answer cache (pipeline/answer_cache.py) ---------------------------------------------------------------
    # Its tables are created on first use, so the store's schema above stays the queue's.
    _CACHE_SCHEMA = """
    CREATE TABLE IF NOT EXISTS answer_cache (
        connector TEXT NOT NULL,
        key TEXT NOT NULL,
        answer TEXT NOT NULL,
        stored_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (connector, key)
    );
    CREATE INDEX IF NOT EXISTS answer_cache_age ON answer_cache (connector, stored_at);
    CREATE TABLE IF NOT EXISTS answer_cache_stats (
        connector TEXT PRIMARY KEY,
        hits INTEGER NOT NULL DEFAULT 0,
        misses INTEGER NOT NULL DEFAULT 0
    );
    """
    _cache_ready = False

    def _cache_tables(self, db: sqlite3.Connection) -> None:
        if not self._cache_ready:
            db.executescript(self._CACHE_SCHEMA)
            self._cache_ready = True

    async def cache_get(self, connector: str, key: str) -> str | None:
        now = time.time()

        def body(db: sqlite3.Connection) -> str | None:
            self._cache_tables(db)
            row = db.execute(
                "SELECT answer FROM answer_cache WHERE connector = ? AND key = ? AND expires_at > ?",
                (connector, key, now),
            ).fetchone()
            column = "hits" if row is not None else "misses"
            db.execute(
                f"INSERT INTO answer_cache_stats (connector, {column}) VALUES (?, 1) "  # noqa: S608 (fixed names)
                f"ON CONFLICT (connector) DO UPDATE SET {column} = {column} + 1",
                (connector,),
            )
            return None if row is None else str(row[0])

        return await self._run(body)

    async def cache_put(self, connector: str, key: str, answer: str, ttl: float, max_entries: int) -> None:
        now = time.time()

        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO answer_cache VALUES (?, ?, ?, ?, ?)", (connector, key, answer, now, now + ttl)
            )
            db.execute("DELETE FROM answer_cache WHERE connector = ? AND expires_at <= ?", (connector, now))
            (count,) = db.execute("SELECT COUNT(*) FROM answer_cache WHERE connector = ?", (connector,)).fetchone()
            if count > max_entries:
                db.execute(
                    "DELETE FROM answer_cache WHERE rowid IN (SELECT rowid FROM answer_cache WHERE connector = ? "
                    "ORDER BY stored_at, rowid LIMIT ?)",
                    (connector, count - max_entries),
                )

        def locked(db: sqlite3.Connection) -> None:
            self._cache_tables(db)
            self._tx(db, body)

        await self._run(locked)

    # --- Workflow checkpoints and traces (workflows/runner.py) -------------------------------------------------

    async def save_workflow_step(self, job_id: str, lease_token: str, event_id: str, step: int, record: str) -> bool:
        now = time.time()

        def body(db: sqlite3.Connection) -> bool:
            held = db.execute(
                f"SELECT 1 FROM jobs WHERE {self._HELD}",  # noqa: S608 (constant text)
                (job_id, lease_token),
            ).fetchone()
            if held is None:
                return False
            db.execute(
                "INSERT OR IGNORE INTO workflow_steps (job_id, event_id, step, record, at) VALUES (?, ?, ?, ?, ?)",
                (job_id, event_id, step, record, now),
            )
            db.execute("DELETE FROM workflow_steps WHERE at < ?", (now - WORKFLOW_TRACE_RETENTION_SECONDS,))
            return True

        return await self._run(lambda db: self._tx(db, body))

    async def workflow_steps(self, job_id: str) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT record FROM workflow_steps WHERE job_id = ? ORDER BY step", (job_id,)
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    async def workflow_trace(self, event_id: str) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT record FROM workflow_steps WHERE event_id = ? ORDER BY at, step", (event_id,)
            ).fetchall()
        )
        return [str(r[0]) for r in rows]
