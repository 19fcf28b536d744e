"""The service's Redis store on a redis-server configured by roles/redis's own templates (redis.conf.j2 and
users.acl.j2, rendered by Ansible's templating), restarted the way systemd restarts it.

Why this exists: with Debian 12's Redis 7.0.15, `user default off` in the ACL file made Redis drop every MULTI/EXEC
of the append-only file at the next start (NOPERM, redis/redis#14541): the queue, the answers and the memory were
all gone after any restart, while every other test (Redis without an ACL file) passed. Only the paths, the port and
systemd's supervision are changed from the rendered file.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ai_assistant.store.redis import RedisStore
from tests.backup.state import write_conversation
from tests.backup.test_drill import check_conversation, in_store
from tests.helpers import free_port, wait_until
from tests.roles.test_static import render

PASSWORD = "assistant-" + "x" * 30  # pragma: allowlist secret
BACKUP_PASSWORD = "backup-" + "y" * 33  # pragma: allowlist secret


class RoleRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "data"
        self.dir.mkdir()
        acl = workdir / "users.acl"
        acl.write_text(
            render(
                "redis", "users.acl.j2", {"redis_acl_password": PASSWORD, "redis_backup_acl_password": BACKUP_PASSWORD}
            )
        )
        conf = render("redis", "redis.conf.j2", {"redis_port": self.port, "redis_dir": str(self.dir),
                                                 "redis_bind": ["127.0.0.1"]})  # fmt: skip
        for key, value in (("supervised", "no"), ("pidfile", str(workdir / "redis.pid")),
                           ("logfile", str(workdir / "redis.log")), ("aclfile", str(acl))):  # fmt: skip
            conf, n = re.subn(rf"(?m)^{key} .*$", f"{key} {value}", conf)
            assert n == 1, f"roles/redis/templates/redis.conf.j2 has no single '{key}' line to point at the test dir"
        self.conf = workdir / "redis.conf"
        self.conf.write_text(conf)
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str = "ai-assistant", password: str = PASSWORD) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", str(self.conf)], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url())

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        wait_until(up, 30, f"redis-server on {self.port}")
        client.close()

    def stop(self) -> None:
        """What `systemctl restart redis-server` sends first: SIGTERM, then Redis writes its files and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


@pytest.fixture
def role_redis(tmp_path: Path) -> Iterator[RoleRedis]:
    server = RoleRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def test_the_queue_answers_and_memory_survive_a_restart(role_redis: RoleRedis) -> None:
    asyncio.run(in_store(lambda: RedisStore(role_redis.url()), write_conversation))
    role_redis.stop()
    role_redis.start()
    assert "NOPERM" not in role_redis.log.read_text(), "Redis refused part of its own append-only file at start"
    asyncio.run(in_store(lambda: RedisStore(role_redis.url()), check_conversation))


def test_the_default_user_still_cannot_be_used(role_redis: RoleRedis) -> None:
    anonymous = redis.Redis(port=role_redis.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("aia:anything")
    with pytest.raises(redis.AuthenticationError):
        anonymous.execute_command("AUTH", "default", "anything")
    anonymous.close()


def test_the_backup_user_may_snapshot_but_not_read(role_redis: RoleRedis) -> None:
    backup = redis.Redis.from_url(role_redis.url("backup", BACKUP_PASSWORD))
    assert backup.lastsave() is not None
    assert backup.bgsave()
    with pytest.raises(redis.exceptions.NoPermissionError):
        backup.get("aia:anything")
    backup.close()
