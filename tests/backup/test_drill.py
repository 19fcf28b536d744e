"""The restore drill, locally: state written through the service's own stores, backed up with `ai-assistant backup
create` to a real S3 API (moto on loopback) through restic, the data destroyed, restored with `backup restore`, then
checked: the same memory and knowledge-base answers, the queued message still queued exactly once, and a platform's
retry of an answered event still refused as a duplicate. Prints RPO and RTO (docs/roles.md records the VM's)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis
import yaml

from ai_assistant.localsecrets import ensure_local_secrets
from ai_assistant.store.redis import RedisStore
from ai_assistant.store.sqlite import SQLiteStore
from tests.backup.conftest import S3, cli
from tests.backup.state import ANSWERED, CHAT, QUEUED, TTL, read_kb, write_conversation, write_kb
from tests.helpers import metric_value


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_install(tmp_path: Path, store: dict[str, object] | None = None) -> tuple[Path, Path]:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "assistant.yaml").write_text(yaml.safe_dump({"store": store or {"backend": "sqlite"}}))
    (config / "plugins.yaml").write_text("require_signatures: true\ntrusted_keys: []\n")
    ensure_local_secrets(data)
    plugin = data / "plugins" / "installed" / "echo-1.0.0"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text('name = "echo"\nversion = "1.0.0"\n')
    (data / "plugins" / "state.json").write_text(json.dumps({"plugins": {}}))
    return config, data


def args(config: Path, data: Path) -> list[str]:
    return ["--config-dir", str(config), "--data-dir", str(data)]


async def check_conversation(store: SQLiteStore | RedisStore) -> None:
    history = await store.history(ANSWERED.conversation_key, 6)
    assert [(t.role, t.content) for t in history] == [("user", ANSWERED.text), ("assistant", "25 days a year.")]
    assert not await store.enqueue(ANSWERED, TTL), "a platform retry of an answered event must stay de-duplicated"
    job = await store.claim(30)
    assert job is not None and job.message.event_id == QUEUED.event_id and job.message.chat_id == CHAT
    assert await store.complete(job.id, job.lease_token)
    assert await store.claim(30) is None, "the queued message must be there exactly once"


async def in_store(
    factory: Callable[[], SQLiteStore | RedisStore], body: Callable[[SQLiteStore | RedisStore], Awaitable[None]]
) -> None:
    """One event loop for a store's whole life: the Redis client is bound to the loop that opened it."""
    store = factory()
    try:
        await body(store)
    finally:
        await store.close()


def report(label: str, backup_done: float, failure: float, restore_started: float, ready: float) -> None:
    print(f"\n[{label}] RPO {failure - backup_done:.1f} s (age of the newest backup at failure); "
          f"RTO {ready - restore_started:.1f} s (restore start to state ready)")  # fmt: skip


def test_drill_sqlite_state(tmp_path: Path, s3: S3, restic_env: Path) -> None:
    config, data = make_install(tmp_path)
    store = SQLiteStore(data / "state.sqlite3")
    asyncio.run(write_conversation(store))
    probe = write_kb(data)
    repo = ["--repo", s3.repo("drill-sqlite"), "--password-file", str(restic_env)]
    textfiles = tmp_path / "textfile"

    # The store stays open (WAL, uncheckpointed) while the backup runs, as the service would keep it.
    made = cli("backup", "create", *repo, *args(config, data), "--textfile-dir", str(textfiles))
    assert made.returncode == 0, made.stderr
    backup_done = time.time()
    prom = (textfiles / "ai_assistant_backup.prom").read_text()
    assert metric_value(prom, "ai_assistant_backup_last_run_success", {"target": "assistant"}) == 1
    assert metric_value(prom, "ai_assistant_backup_last_success_timestamp_seconds") == pytest.approx(
        backup_done, abs=120
    )
    asyncio.run(store.close())
    before = tree(data / "plugins"), (data / "secrets.env").read_text(), (data / "install-id").read_text()

    failure = time.time()
    shutil.rmtree(data)  # the data volume is gone
    started = time.monotonic()
    restored = cli("backup", "restore", *repo, *args(config, data))
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout and "state" in restored.stdout
    store = SQLiteStore(data / "state.sqlite3")
    try:
        asyncio.run(check_conversation(store))
    finally:
        asyncio.run(store.close())
    assert read_kb(data, probe.query) == probe.hits and probe.hits
    ready = time.monotonic()
    assert (tree(data / "plugins"), (data / "secrets.env").read_text(), (data / "install-id").read_text()) == before
    assert (data / "secrets.env").stat().st_mode & 0o077 == 0, "the restored secrets must stay private"
    report("sqlite drill", backup_done, failure, started, ready)


def test_drill_redis_state(tmp_path: Path, s3: S3, restic_env: Path, persistent_redis: tuple[str, Path]) -> None:
    url, rdb = persistent_redis
    config, data = make_install(tmp_path, {"backend": "redis", "redis_url": url})
    asyncio.run(in_store(lambda: RedisStore(url), write_conversation))
    probe = write_kb(data)
    repo = ["--repo", s3.repo("drill-redis"), "--password-file", str(restic_env)]

    made = cli("backup", "create", *repo, *args(config, data))
    assert made.returncode == 0, made.stderr
    assert "redis" in made.stdout
    backup_done = time.time()

    failure = time.time()
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    rdb.unlink(missing_ok=True)
    shutil.rmtree(data)
    started = time.monotonic()
    restored = cli("backup", "restore", *repo, *args(config, data))
    assert restored.returncode == 0, restored.stderr
    asyncio.run(in_store(lambda: RedisStore(url), check_conversation))
    assert read_kb(data, probe.query) == probe.hits
    report("redis drill", backup_done, failure, started, time.monotonic())


def test_knowledge_base_alone_is_restored_and_the_rest_left_as_it_is(tmp_path: Path, s3: S3, restic_env: Path) -> None:
    config, data = make_install(tmp_path)
    store = SQLiteStore(data / "state.sqlite3")
    asyncio.run(write_conversation(store))
    asyncio.run(store.close())
    probe = write_kb(data)
    repo = ["--repo", s3.repo("partial"), "--password-file", str(restic_env)]
    assert cli("backup", "create", *repo, *args(config, data)).returncode == 0

    # After the backup: the KB is damaged, and the conversation moves on (that newer state must survive).
    shutil.rmtree(data / "knowledge")
    (data / "knowledge").mkdir()
    (data / "knowledge" / "knowledge.sqlite3").write_bytes(b"not a database")
    store = SQLiteStore(data / "state.sqlite3")
    job = asyncio.run(store.claim(30))
    assert job is not None
    asyncio.run(store.complete(job.id, job.lease_token))
    asyncio.run(store.close())
    state_after = hashlib.sha256((data / "state.sqlite3").read_bytes()).hexdigest()

    done = cli("backup", "restore", *repo, *args(config, data), "--only", "knowledge")
    assert done.returncode == 0, done.stderr
    assert "restored knowledge from" in done.stdout
    assert read_kb(data, probe.query) == probe.hits
    assert hashlib.sha256((data / "state.sqlite3").read_bytes()).hexdigest() == state_after
    kept = list(data.glob(".pre-restore-*/knowledge/knowledge.sqlite3"))
    assert kept and kept[0].read_bytes() == b"not a database", "the replaced KB is kept for the operator"


def test_list_verify_and_retention(tmp_path: Path, s3: S3, restic_env: Path) -> None:
    config, data = make_install(tmp_path)
    write_kb(data)
    repo = ["--repo", s3.repo("retention"), "--password-file", str(restic_env)]
    for _ in range(2):
        made = cli("backup", "create", *repo, *args(config, data), "--keep-daily", "1", "--keep-weekly", "0",
                   "--keep-monthly", "0")  # fmt: skip
        assert made.returncode == 0, made.stderr
    listed = cli("backup", "list", *repo, "--json")
    assert listed.returncode == 0, listed.stderr
    snaps = json.loads(listed.stdout)
    assert len(snaps) == 1, "retention keeps one backup a day: the first was forgotten and pruned"
    install = (data / "install-id").read_text().strip()
    assert f"install:{install}" in snaps[0]["tags"]
    table = cli("backup", "list", *repo)
    assert table.returncode == 0, table.stderr
    assert snaps[0]["short_id"] in table.stdout and install[:8] in table.stdout
    verified = cli("backup", "verify", *repo, snaps[0]["short_id"], "--data-dir", str(data))
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout and "knowledge" in verified.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the backup unit runs as root over files of another account")
def test_restore_as_root_gives_the_files_back_to_the_service_account(tmp_path: Path, s3: S3, restic_env: Path) -> None:
    """The unit runs as root; the service does not. Copies and restored files must keep the service's owner, or the
    service could not write its own database after a restore."""
    config, data = make_install(tmp_path)
    store = SQLiteStore(data / "state.sqlite3")
    asyncio.run(in_store(lambda: store, write_conversation))
    write_kb(data)
    service_uid = 65534  # nobody: any account that is not root
    for path in [data, *data.rglob("*")]:
        os.chown(path, service_uid, service_uid)
    repo = ["--repo", s3.repo("owners"), "--password-file", str(restic_env)]
    made = cli("backup", "create", *repo, *args(config, data))
    assert made.returncode == 0, made.stderr
    shutil.rmtree(data)
    restored = cli("backup", "restore", *repo, *args(config, data))
    assert restored.returncode == 0, restored.stderr
    owners = {p.relative_to(data).as_posix(): p.stat().st_uid for p in [data, *data.rglob("*")]}
    assert set(owners.values()) == {service_uid}, owners
