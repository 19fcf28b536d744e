"""The two-backend fixture every store test runs against: SQLite (one host) and a real redis-server (shared)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_assistant.store.base import StateStore


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
