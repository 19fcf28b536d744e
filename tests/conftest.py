"""Session fixtures for real dependencies: the embedded model server and a Redis server, both on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ai_assistant.store.base import StateStore
from tests.helpers import ReplyReceiver, free_port, wait_until


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real SmolLM2-135M-Instruct behind llama-cpp-python's OpenAI server, as `ai-assistant up` runs it."""
    from ai_assistant.engines.local_server import LocalModelServer
    from ai_assistant.settings import LocalModelSettings

    log = tmp_path_factory.mktemp("model") / "model-server.log"
    server = LocalModelServer(LocalModelSettings(port=free_port(), threads=1), log)
    started = time.monotonic()
    server.start()
    try:
        server.wait_ready()
        print(f"\n[model server ready in {time.monotonic() - started:.1f} s]")
        yield server.base_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server (Debian package) on a free loopback port, persistence off, deleted afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test` (scripts/bootstrap installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), 10, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


@pytest.fixture
def receiver() -> Iterator[ReplyReceiver]:
    r = ReplyReceiver()
    yield r
    r.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """The two backends every store-level test runs against: SQLite (one host) and the session's real redis-server
    (shared), emptied first."""
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
