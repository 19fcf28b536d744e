"""Restore: download into a staging directory next to the data, verify, then swap it in.

Nothing on the host changes until the backup has been verified (manifest, checksums, schema version, install), and
the swap renames entries within one filesystem, so a failure leaves the existing data as it was. What was there
before is kept in `<data dir>/.pre-restore-<time>/` until the operator deletes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from ..localsecrets import secrets_path
from .collect import KB_DIR, PLUGINS_DIR, REDIS_RDB, SECRETS, STATE_DB, _where
from .errors import BackupError, BackupInvalid
from .manifest import INSTALL_ID_FILE, Manifest, install_id, verify
from .restic import Restic

PID_FILE = "ai-assistant.pid"  # written by `ai-assistant serve`/`up` (cli.py)


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    snapshot: str
    parts: list[str]
    previous: Path | None  # where the replaced files were moved, None when nothing was replaced


def service_running(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def load_redis(rdb: Path, url: str, timeout: float = 120.0) -> int:
    """Load the RDB into a private redis-server (a unix socket in a private directory, no TCP port), then copy every
    key into the target with DUMP/RESTORE in one MULTI/EXEC: the target holds either its old keys or the backup's."""
    target = redis.Redis.from_url(url, socket_timeout=60)
    db = int(target.connection_pool.connection_kwargs.get("db", 0) or 0)
    with tempfile.TemporaryDirectory(prefix="ai-assistant-redis-") as tmp:
        sock = Path(tmp) / "redis.sock"
        shutil.copy2(rdb, Path(tmp) / "dump.rdb")
        try:
            server = subprocess.Popen(
                ["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                 "--dir", tmp, "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", ""],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        except FileNotFoundError:
            raise BackupError(
                "redis-server: not installed on this host; it is needed to read the backup's RDB"
            ) from None
        try:
            source = redis.Redis(unix_socket_path=str(sock), db=db, socket_timeout=60)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if source.ping():
                        break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise BackupInvalid(f"{REDIS_RDB}: redis-server cannot load it (corrupt or truncated backup)")
                time.sleep(0.05)
            try:
                pipe = target.pipeline(transaction=True)
                pipe.flushdb()
                count = 0
                for key in source.scan_iter(count=1000):
                    payload = source.dump(key)
                    ttl = source.pttl(key)
                    if payload is None or ttl == -2:  # expired between SCAN and DUMP
                        continue
                    pipe.restore(key, max(int(ttl), 0), payload, replace=True)
                    count += 1
                pipe.execute()
            except redis.RedisError as exc:
                raise BackupError(f"redis {_where(url)}: restore failed, its keys are unchanged ({exc})") from None
            finally:
                source.close()
                target.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return count


def _swap(pairs: list[tuple[Path | None, Path]], aside: Path) -> bool:
    """Move each live path aside and the staged one (if any) into its place; on any failure, undo what was done."""
    done: list[tuple[Path | None, Path, Path | None]] = []
    try:
        for staged, live in pairs:
            kept: Path | None = None
            if live.exists() or live.is_symlink():
                kept = aside / live.name
                if kept.exists():  # config/ and data/ entries share the one folder
                    kept = aside / f"{live.parent.name}-{live.name}"
                aside.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.move(live, kept)
            if staged is not None:
                live.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.move(staged, live)
                except BaseException:
                    if kept is not None:
                        shutil.move(kept, live)
                    raise
            done.append((staged, live, kept))
    except BaseException:
        for staged, live, kept in reversed(done):
            if staged is not None:
                shutil.move(live, staged)
            if kept is not None:
                shutil.move(kept, live)
        raise
    return aside.exists()


def restore(
    restic: Restic,
    snapshot: str,
    config_dir: Path,
    data_dir: Path,
    *,
    only_knowledge: bool = False,
    with_config: bool = False,
    allow_other_install: bool = False,
    redis_url: str | None = None,
) -> Restored:
    pid = service_running(data_dir)
    if pid is not None:
        raise BackupError(f"the assistant is running (pid {pid}); stop it first: systemctl stop ai-assistant")
    data_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))  # same filesystem: the swap is a rename
    try:
        restic.restore(snapshot, staging)
        manifest = verify(
            staging,
            snapshot,
            expected_install=install_id(data_dir, create=False),
            allow_other_install=allow_other_install,
        )
        pairs: list[tuple[Path | None, Path]] = []
        if only_knowledge:
            if "knowledge" not in manifest.parts:
                raise BackupInvalid(f"backup {snapshot}: holds no knowledge base")
            parts = ["knowledge"]
            pairs.append((staging / "data" / KB_DIR, data_dir / KB_DIR))
        else:
            parts = list(manifest.parts)
            if "redis" in parts:
                url = redis_url
                if not url:
                    raise BackupError("backup holds the redis store: pass --redis-url (or set store.redis_url)")
                load_redis(staging / REDIS_RDB, url)
            if "state" in parts:
                pairs.append((staging / "data" / STATE_DB, data_dir / STATE_DB))
                # A WAL left from the old database would be replayed into the restored one: move it aside too.
                pairs.extend((None, data_dir / (STATE_DB + suffix)) for suffix in ("-wal", "-shm"))
            for name, part in ((KB_DIR, "knowledge"), (PLUGINS_DIR, "plugins")):
                if part in parts:
                    pairs.append((staging / "data" / name, data_dir / name))
            pairs.append((staging / "data" / INSTALL_ID_FILE, data_dir / INSTALL_ID_FILE))
            if "secrets" in parts:
                pairs.append((staging / SECRETS, secrets_path(data_dir)))
            if with_config:
                pairs.extend((entry, config_dir / entry.name) for entry in sorted((staging / "config").iterdir()))
            else:
                parts.remove("config")
        aside = data_dir / f".pre-restore-{stamp}"
        moved = _swap(pairs, aside)
        if os.geteuid() == 0 and not only_knowledge:
            # A freshly mounted, empty volume is root's: give the data dir back to the account that owned it, or the
            # service could not create its SQLite journal files next to the restored database.
            st = (staging / "data").stat()
            os.chown(data_dir, st.st_uid, st.st_gid)
        return Restored(manifest, snapshot, parts, aside if moved else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
