"""The Redis ACL that roles/backup documents for its user is enough for a backup and a restore, and the assistant's
own user (the redis role's `-@admin -@dangerous`) is refused with a one-line error that names Redis."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ai_assistant.store.redis import RedisStore
from ai_assistant.store.sqlite import SQLiteStore
from tests.backup.conftest import S3, cli
from tests.backup.state import ANSWERED, write_conversation
from tests.backup.test_drill import args, in_store, make_install
from tests.helpers import free_port, wait_until

# roles/backup/README.md, "Redis"; roles/redis/templates/users.acl.j2 for the assistant's user.
BACKUP_RULES = "~* +bgsave +lastsave +info +ping +flushdb +restore +multi +exec +discard"
APP_RULES = "~* &* +@all -@admin -@dangerous"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    work = tmp_path / "redis"
    work.mkdir()
    (work / "users.acl").write_text(
        f"user default off\nuser backup on >backup-pw {BACKUP_RULES}\nuser app on >app-pw {APP_RULES}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--aclfile",
         str(work / "users.acl"), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, username="app", password="app-pw")

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, 20, "redis-server with an ACL file")
        yield port, work / "dump.rdb"
    finally:
        client.close()
        proc.terminate()
        proc.wait(15)


def test_the_documented_acl_backs_up_and_restores(
    tmp_path: Path, s3: S3, restic_env: Path, acl_redis: tuple[int, Path]
) -> None:
    port, rdb = acl_redis
    app_url = f"redis://app:app-pw@127.0.0.1:{port}/0"  # pragma: allowlist secret
    backup_url = f"redis://backup:backup-pw@127.0.0.1:{port}/0"  # pragma: allowlist secret
    config, data = make_install(tmp_path, {"backend": "redis", "redis_url": app_url})
    asyncio.run(in_store(lambda: RedisStore(app_url), write_conversation))
    repo = ["--repo", s3.repo("acl"), "--password-file", str(restic_env)]

    refused = cli("backup", "create", *repo, *args(config, data), "--redis-rdb", str(rdb))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(f"error: redis 127.0.0.1:{port}:") and len(refused.stderr.splitlines()) == 1
    assert "app-pw" not in refused.stderr

    made = cli("backup", "create", *repo, *args(config, data), "--redis-url", backup_url, "--redis-rdb", str(rdb))
    assert made.returncode == 0, made.stderr
    admin = redis.Redis(port=port, username="backup", password="backup-pw")
    admin.flushdb()  # Redis lost its data
    admin.close()
    restored = cli("backup", "restore", *repo, *args(config, data), "--redis-url", backup_url)
    assert restored.returncode == 0, restored.stderr

    async def memory(store: SQLiteStore | RedisStore) -> None:
        turns = await store.history(ANSWERED.conversation_key, 6)
        assert [t.content for t in turns] == [ANSWERED.text, "25 days a year."]

    asyncio.run(in_store(lambda: RedisStore(app_url), memory))
