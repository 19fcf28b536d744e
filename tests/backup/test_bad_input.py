"""Every backup or restore that cannot go on: one line naming the cause, exit status 2, and the existing data (and a
running service) untouched. Real restic, real S3 API (moto on loopback), real files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest

from ai_assistant.backup.collect import Sources, collect
from ai_assistant.backup.manifest import MANIFEST
from ai_assistant.backup.restic import Restic
from ai_assistant.store.sqlite import SQLiteStore
from tests.backup.conftest import KEYS, S3, cli
from tests.backup.state import write_conversation, write_kb
from tests.backup.test_drill import args, make_install, tree
from tests.helpers import free_port, metric_value


@pytest.fixture
def install(tmp_path: Path) -> tuple[Path, Path]:
    config, data = make_install(tmp_path)
    store = SQLiteStore(data / "state.sqlite3")

    async def write() -> None:
        try:
            await write_conversation(store)
        finally:
            await store.close()

    asyncio.run(write())
    write_kb(data)
    return config, data


def fails_with(proc: subprocess.CompletedProcess[str], cause: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert cause in lines[0], lines[0]
    return lines[0]


def repo_args(repo: str, password: Path) -> list[str]:
    return ["--repo", repo, "--password-file", str(password)]


def backed_up(s3: S3, bucket: str, password: Path, config: Path, data: Path) -> list[str]:
    repo = repo_args(s3.repo(bucket), password)
    made = cli("backup", "create", *repo, *args(config, data))
    assert made.returncode == 0, made.stderr
    return repo


def test_wrong_key_is_named_and_nothing_changes(
    tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path]
) -> None:
    config, data = install
    backed_up(s3, "wrong-key", restic_env, config, data)
    other = tmp_path / "other.password"
    other.write_text("not the key\n")
    before = tree(data)
    line = fails_with(cli("backup", "restore", *repo_args(s3.repo("wrong-key"), other), *args(config, data)), "wrong")
    assert "wrong repository password" in line
    assert tree(data) == before
    assert not list(data.glob(".restore-*")), "no staging directory is left behind"


def test_unreachable_bucket_fails_the_backup_and_sets_the_metric_that_pages(
    tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path]
) -> None:
    config, data = install
    textfiles = tmp_path / "textfile"
    good = cli("backup", "create", *repo_args(s3.repo("reachable"), restic_env), *args(config, data),
               "--textfile-dir", str(textfiles))  # fmt: skip
    assert good.returncode == 0, good.stderr
    prom = textfiles / "ai_assistant_backup.prom"
    succeeded = metric_value(prom.read_text(), "ai_assistant_backup_last_success_timestamp_seconds")
    assert succeeded > 0

    nowhere = f"s3:http://127.0.0.1:{free_port()}/gone-bucket/host-a"  # nothing listens there
    failed = cli("backup", "create", *repo_args(nowhere, restic_env), *args(config, data), "--textfile-dir",
                 str(textfiles))  # fmt: skip
    line = fails_with(failed, "bucket unreachable")
    assert nowhere in line
    text = prom.read_text()
    assert metric_value(text, "ai_assistant_backup_last_run_success", {"target": "assistant"}) == 0
    assert metric_value(text, "ai_assistant_backup_last_success_timestamp_seconds") == succeeded, (
        "a failed run keeps the last success time, so BackupTooOld keeps counting from it"
    )
    assert not (data / ".backup-staging").exists(), "the clear-text staging copy is removed after a failure"

    before = tree(data)
    fails_with(cli("backup", "restore", *repo_args(nowhere, restic_env), *args(config, data)), "bucket unreachable")
    assert tree(data) == before


def test_backup_of_another_install_is_refused(
    tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path]
) -> None:
    config, data = install
    repo = backed_up(s3, "other-install", restic_env, config, data)
    other = "another-install-" + "0" * 16  # this host is a different install
    (data / "install-id").write_text(other + "\n")
    before = tree(data)
    line = fails_with(cli("backup", "restore", *repo, *args(config, data)), "belongs to install")
    assert other in line
    assert tree(data) == before
    moved = cli("backup", "restore", *repo, *args(config, data), "--allow-other-install")
    assert moved.returncode == 0, moved.stderr


def _upload_crafted(s3: S3, bucket: str, password: Path, config: Path, data: Path, tmp_path: Path, change: str) -> str:
    """A backup assembled by the real code, altered the way a bug or an attacker would, and uploaded by restic."""
    root = tmp_path / "crafted"
    manifest = collect(Sources(config, data, "sqlite"), root)
    if change == "newer":
        newer = manifest.model_copy(update={"schema_version": manifest.schema_version + 1})
        (root / MANIFEST).write_text(newer.model_dump_json())
    elif change == "tampered":
        with (root / "data" / "state.sqlite3").open("r+b") as f:
            f.seek(200)
            f.write(b"\xff\xff\xff\xff")
    elif change == "no-manifest":
        (root / MANIFEST).unlink()
    elif change == "truncated-manifest":
        raw = (root / MANIFEST).read_bytes()
        (root / MANIFEST).write_bytes(raw[: len(raw) // 2])
    restic = Restic(s3.repo(bucket), password, env=KEYS)
    restic.init()
    return str(restic.backup(root, [f"install:{manifest.install_id}"], "crafted")["snapshot_id"])


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ("newer", "is newer than this"),
        ("tampered", "state.sqlite3 does not match its checksum"),
        ("no-manifest", f"no {MANIFEST}"),
        ("truncated-manifest", "corrupt or truncated backup"),
    ],
)
def test_backup_that_fails_verification_changes_nothing(
    tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path], change: str, cause: str
) -> None:
    config, data = install
    snapshot = _upload_crafted(s3, f"crafted-{change}", restic_env, config, data, tmp_path, change)
    before = tree(data)
    repo = repo_args(s3.repo(f"crafted-{change}"), restic_env)
    fails_with(cli("backup", "restore", *repo, snapshot, *args(config, data)), cause)
    assert tree(data) == before
    fails_with(cli("backup", "verify", *repo, snapshot, "--data-dir", str(data)), cause)


def test_corrupt_objects_in_the_bucket_are_named(
    tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path]
) -> None:
    config, data = install
    repo = backed_up(s3, "corrupt", restic_env, config, data)
    bucket = boto3.client("s3", endpoint_url=s3.endpoint, **{k.lower(): v for k, v in KEYS.items() if "KEY" in k},
                          region_name="us-east-1")  # fmt: skip
    packs = [o["Key"] for o in bucket.list_objects_v2(Bucket="corrupt")["Contents"] if "/data/" in o["Key"]]
    assert packs
    for key in packs:  # every pack truncated to half: what an interrupted copy or bit rot leaves
        body = bucket.get_object(Bucket="corrupt", Key=key)["Body"].read()
        bucket.put_object(Bucket="corrupt", Key=key, Body=body[: len(body) // 2])
    before = tree(data)
    fails_with(cli("backup", "restore", *repo, *args(config, data)), "corrupt or truncated backup")
    assert tree(data) == before


def test_restore_refuses_while_the_service_runs(
    tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path]
) -> None:
    config, data = install
    repo = backed_up(s3, "running", restic_env, config, data)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (data / "ai-assistant.pid").write_text(f"{sleeper.pid}\n")  # as `ai-assistant serve` writes it
        before = tree(data)
        line = fails_with(cli("backup", "restore", *repo, *args(config, data)), "the assistant is running")
        assert str(sleeper.pid) in line
        assert tree(data) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    os.unlink(data / "ai-assistant.pid")


def test_unknown_part_is_named(tmp_path: Path, restic_env: Path, install: tuple[Path, Path]) -> None:
    config, data = install
    fails_with(
        cli("backup", "restore", *repo_args(str(tmp_path / "r"), restic_env), *args(config, data), "--only", "redis"),
        "--only redis: unknown part",
    )


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: the nearest real thing to a bucket that is full (moto has no quotas)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill up ({done.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_repository_fails_the_backup_and_keeps_the_last_good_time(
    tmp_path: Path, restic_env: Path, install: tuple[Path, Path], tiny_volume: Path
) -> None:
    config, data = install
    textfiles = tmp_path / "textfile"
    repo = repo_args(str(tiny_volume / "repo"), restic_env)
    first = cli("backup", "create", *repo, *args(config, data), "--textfile-dir", str(textfiles))
    assert first.returncode == 0, first.stderr
    prom = textfiles / "ai_assistant_backup.prom"
    succeeded = metric_value(prom.read_text(), "ai_assistant_backup_last_success_timestamp_seconds")
    # A new plugin archive of incompressible bytes, larger than the space left.
    (data / "plugins" / "big.zip").write_bytes(os.urandom(6 * 1024 * 1024))
    failed = cli("backup", "create", *repo, *args(config, data), "--textfile-dir", str(textfiles))
    fails_with(failed, "repository full")
    assert metric_value(prom.read_text(), "ai_assistant_backup_last_run_success") == 0
    assert metric_value(prom.read_text(), "ai_assistant_backup_last_success_timestamp_seconds") == succeeded
    assert not (data / ".backup-staging").exists()


def test_unknown_snapshot_is_named(tmp_path: Path, s3: S3, restic_env: Path, install: tuple[Path, Path]) -> None:
    config, data = install
    repo = backed_up(s3, "unknown-snapshot", restic_env, config, data)
    before = tree(data)
    fails_with(cli("backup", "restore", *repo, "deadbeef", *args(config, data)), "no such snapshot")
    assert tree(data) == before
