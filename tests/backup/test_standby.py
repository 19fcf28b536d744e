"""The Redis part of docs/runbooks/promote-standby.md, on two real redis-servers on loopback: a replica that followed
the primary holds the queue, the de-duplication keys and the memory; after the primary is gone, `REPLICAOF NO ONE`
makes it writable and the service's own store goes on with it (the queued message once, a retry still refused)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ai_assistant.store.redis import RedisStore
from ai_assistant.store.sqlite import SQLiteStore
from tests.backup.state import ANSWERED, QUEUED, TTL, write_conversation
from tests.backup.test_drill import in_store
from tests.helpers import free_port, wait_until


def _server(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    workdir.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(up, 20, f"redis-server on {port}")
    client.close()
    return proc, port


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    primary, p_port = _server(tmp_path / "primary")
    replica, r_port = _server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(p_port))
    try:
        yield primary, p_port, r_port
    finally:
        for proc in (primary, replica):
            proc.terminate()
            proc.wait(15)


def test_promoted_replica_carries_the_queue_dedupe_and_memory(pair: tuple[subprocess.Popen[bytes], int, int]) -> None:
    primary, p_port, r_port = pair
    replica = redis.Redis(port=r_port)
    wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 30, "replication link")
    asyncio.run(in_store(lambda: RedisStore(f"redis://127.0.0.1:{p_port}/0"), write_conversation))

    # What the runbook reads before promoting: the replica has caught up with the primary's offset.
    offset = redis.Redis(port=p_port).info("replication")["master_repl_offset"]
    wait_until(lambda: replica.info("replication")["slave_repl_offset"] >= offset, 30, "the replica to catch up")
    primary.kill()  # the zone is gone
    primary.wait(15)
    with pytest.raises(redis.ReadOnlyError):
        replica.set("probe", "1")  # a replica refuses writes until it is promoted
    replica.execute_command("REPLICAOF", "NO", "ONE")
    assert replica.info("replication")["role"] == "master"

    async def carries_on(store: SQLiteStore | RedisStore) -> None:
        history = await store.history(ANSWERED.conversation_key, 6)
        assert [t.content for t in history] == [ANSWERED.text, "25 days a year."]
        assert not await store.enqueue(ANSWERED, TTL), "the platform's retry must still be refused"
        job = await store.claim(30)
        assert job is not None and job.message.event_id == QUEUED.event_id
        assert await store.complete(job.id, job.lease_token)
        assert await store.claim(30) is None

    asyncio.run(in_store(lambda: RedisStore(f"redis://127.0.0.1:{r_port}/0"), carries_on))
    replica.close()
