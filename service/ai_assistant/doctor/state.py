"""The state store (SQLite read-only, or Redis), its queue, and disk space."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..settings import Settings
from .report import Check, Status, one_line

QUEUE_AGE_WARN_SECONDS = 300.0  # AIAssistantQueueOldestMessageAge
DISK_WARN_FREE_RATIO = 0.20  # NodeFilesystemFillingUp
DISK_FAIL_FREE_RATIO = 0.05  # NodeFilesystemAlmostFull


@dataclass(frozen=True)
class QueueInfo:
    depth: int
    oldest_age_seconds: float
    dead: int


def read_sqlite(path: Path, queries: Sequence[str]) -> tuple[float, list[tuple[Any, ...]]]:
    wal = path.with_name(path.name + "-wal")
    mode = "ro" if wal.exists() else "ro&immutable=1"
    started = time.perf_counter()
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=5)
    try:
        rows = [tuple(db.execute(q).fetchone()) for q in queries]
    finally:
        db.close()
    return time.perf_counter() - started, rows


async def state_store(settings: Settings | None, data_dir: Path) -> tuple[Check, QueueInfo | None]:
    name = "state store"
    if settings is not None and settings.store.backend == "redis" and settings.store.redis_url is not None:
        ca_file = settings.store.redis_ca_file
        ca = settings.resolve(ca_file) if ca_file is not None else None
        return await _redis_store(settings.store.redis_url.get_secret_value(), ca)
    path = data_dir / "state.sqlite3"
    if not path.exists():
        return (
            Check(
                name,
                Status.WARN,
                f"no state file at {path} yet",
                "normal before the first start (the service creates it); otherwise check --data-dir",
                "state-store",
            ),
            None,
        )
    now = time.time()
    try:
        latency, rows = await asyncio.to_thread(
            read_sqlite,
            path,
            [
                "SELECT COUNT(*), MIN(enqueued_at) FROM jobs WHERE state = 'queued'",
                "SELECT COUNT(*) FROM jobs WHERE state = 'dead'",
            ],
        )
    except sqlite3.Error as exc:
        return (
            Check(name, Status.FAIL, f"SQLite at {path}: {exc}", "see the runbook section", "state-store"),
            None,
        )
    (depth, oldest), (dead,) = rows
    queue = QueueInfo(int(depth), max(0.0, now - float(oldest)) if oldest else 0.0, int(dead))
    ms = latency * 1000
    check = Check(name, Status.PASS, f"SQLite at {path} read in {ms:.0f} ms", details={"latency_ms": round(ms, 1)})
    return check, queue


async def _redis_store(url: str, ca_file: Path | None = None) -> tuple[Check, QueueInfo | None]:
    from redis.exceptions import RedisError

    from ..store.redis import ENQUEUED, P, redis_client, tls_problem

    where = urlsplit(url)
    label = f"Redis at {where.hostname}:{where.port or 6379}"  # never the URL: it may carry the password
    try:
        client = redis_client(url, ca_file, socket_timeout=5, socket_connect_timeout=5)
    except ConfigError as exc:
        return Check("state store", Status.FAIL, one_line(exc), "see the runbook", "state-store"), None
    try:
        started = time.perf_counter()
        await cast(Awaitable[Any], client.ping())
        latency = time.perf_counter() - started
        depth = int(await client.zcard(ENQUEUED))  # QUEUE holds only the first job of each chat
        oldest: list[Any] = await client.zrange(ENQUEUED, 0, 0, withscores=True)
        dead = 0
        async for _ in client.scan_iter(match=P + "dead:*", count=1000):
            dead += 1
            if dead >= 100_000:  # bounded: the count only has to say "there are many"
                break
    except (RedisError, OSError) as exc:
        problem = tls_problem(exc, url, ca_file) or f"{label}: {one_line(exc)}"
        check = Check("state store", Status.FAIL, problem, "see the runbook", "state-store")
        return check, None
    finally:
        await client.aclose()
    age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
    ms = latency * 1000
    check = Check("state store", Status.PASS, f"{label} answers in {ms:.0f} ms", details={"latency_ms": round(ms, 1)})
    return check, QueueInfo(depth, age, dead)


def queue_check(queue: QueueInfo | None) -> Check:
    if queue is None:
        return Check("queue", Status.SKIP, "not read: the state store check did not pass")
    details = {"depth": queue.depth, "oldest_age_seconds": round(queue.oldest_age_seconds, 1), "dead": queue.dead}
    summary = (
        f"{queue.depth} waiting, oldest {queue.oldest_age_seconds:.0f} s, {queue.dead} dead letter(s)"
        if queue.depth
        else f"empty, {queue.dead} dead letter(s)"
    )
    if queue.oldest_age_seconds > QUEUE_AGE_WARN_SECONDS:
        advice = "answers are not being produced: check the engine and the workers"
        return Check("queue", Status.WARN, summary, advice, "queue", details)
    if queue.dead:
        advice = "messages that gave up: find their last error in the log before they are forgotten"
        return Check("queue", Status.WARN, summary, advice, "queue", details)
    return Check("queue", Status.PASS, summary, details=details)


def disk_check(name: str, path: Path) -> Check:
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a data dir not created yet lives on its parent's filesystem
    usage = shutil.disk_usage(existing)
    ratio = usage.free / usage.total if usage.total else 0.0
    free_gib = usage.free / 2**30
    details = {"free_bytes": usage.free, "free_ratio": round(ratio, 3)}
    summary = f"{free_gib:.1f} GiB free ({ratio:.0%}) under {path}"
    advice = "free space: old logs, backups, unused models (see docs/runbooks/host.md)"
    if ratio < DISK_FAIL_FREE_RATIO:
        return Check(name, Status.FAIL, summary, advice, "disk-space", details)
    if ratio < DISK_WARN_FREE_RATIO:
        return Check(name, Status.WARN, summary, advice, "disk-space", details)
    return Check(name, Status.PASS, summary, details=details)


def model_dir(settings: Settings) -> Path | None:
    if settings.local_model.model_path is not None:
        return settings.local_model.model_path.parent
    from ..engines.local_server import default_model_path

    try:
        return default_model_path().parent
    except ConfigError:
        return None
