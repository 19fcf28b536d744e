"""Assemble one backup directory from consistent copies of the install's state.

Layout (the paths a restore knows):
    data/state.sqlite3              the SQLite state store (queue, de-duplication keys, conversation memory)
    data/knowledge/...              the embedded knowledge store: knowledge.sqlite3, index.usearch, index.generation
    data/plugins/...                installed plugin archives and their state
    data/install-id                 which install this is
    secrets/secrets.env             the host-generated secrets (restic encrypts them before they leave the host)
    config/...                      the config dir: assistant.yaml, connectors.yaml, plugins.yaml (trusted keys), ...
    redis/dump.rdb                  the Redis state store, when store.backend is redis
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from .. import __version__
from ..localsecrets import secrets_path
from .errors import BackupError
from .manifest import FORMAT, INSTALL_ID_FILE, MANIFEST, SCHEMA_VERSION, Manifest, checksums, install_id

STATE_DB = "state.sqlite3"
KB_DIR = "knowledge"
KB_DB = "knowledge.sqlite3"
KB_INDEX = "index.usearch"
KB_GENERATION = "index.generation"
PLUGINS_DIR = "plugins"
SECRETS = "secrets/secrets.env"  # pragma: allowlist secret
REDIS_RDB = "redis/dump.rdb"


@dataclass(frozen=True)
class Sources:
    config_dir: Path
    data_dir: Path
    store_backend: str  # sqlite | redis
    redis_url: str | None = None
    redis_rdb: Path | None = None  # where the server writes its RDB (default: CONFIG GET dir/dbfilename)
    redis_timeout: float = 600.0


def sqlite_copy(source: Path, dest: Path) -> None:
    """SQLite's online backup API: a consistent copy while the service keeps writing (a file copy of a WAL database
    can miss committed pages or catch a half-checkpointed file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: cannot be backed up ({exc})") from None


def _kb_generation(db: Path) -> str | None:
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return None if row is None else str(row[0])


def _knowledge(src: Path, dest: Path) -> None:
    """The SQLite file is the truth; the usearch index is derived from it. The index is kept only when it was saved at
    the generation the SQLite copy has, so a restore never pairs vectors with rows they do not belong to (otherwise
    the store rebuilds the index from SQLite on open)."""
    sqlite_copy(src / KB_DB, dest / KB_DB)
    generation = _kb_generation(dest / KB_DB)
    # Index first, its generation second: the store saves them in the other order, so a save racing this copy shows
    # up as a generation that does not match, never as a matching pair of different generations.
    try:
        shutil.copy2(src / KB_INDEX, dest / KB_INDEX)
        shutil.copy2(src / KB_GENERATION, dest / KB_GENERATION)
    except FileNotFoundError:
        generation = None
    if generation is None or (dest / KB_GENERATION).read_text().strip() != generation:
        (dest / KB_INDEX).unlink(missing_ok=True)
        (dest / KB_GENERATION).unlink(missing_ok=True)


def redis_snapshot(url: str, dest: Path, rdb: Path | None, timeout: float) -> None:
    """A completed BGSAVE: the RDB file on disk is at least as new as the moment this started."""
    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        before = int(client.lastsave().timestamp())
        # LASTSAVE has one-second resolution: a save finishing within the second it reports would look like no save.
        while int(time.time()) <= before:
            time.sleep(0.05)
        try:
            client.bgsave()
        except redis.ResponseError as exc:
            if "in progress" not in str(exc):
                raise
            client.bgsave(schedule=True)  # one already runs from before we started: queue ours after it
        deadline = time.monotonic() + timeout
        while True:
            info = client.info("persistence")
            if int(client.lastsave().timestamp()) > before and not info.get("rdb_bgsave_in_progress"):
                break
            if time.monotonic() > deadline:
                raise BackupError(f"redis {_where(url)}: BGSAVE did not finish within {timeout:.0f} s")
            time.sleep(0.1)
        if info.get("rdb_last_bgsave_status") != "ok":
            raise BackupError(
                f"redis {_where(url)}: BGSAVE failed (rdb_last_bgsave_status {info.get('rdb_last_bgsave_status')})"
            )
        if rdb is None:
            directory = str(client.config_get("dir")["dir"])
            rdb = Path(directory) / str(client.config_get("dbfilename")["dbfilename"])
    except redis.RedisError as exc:
        raise BackupError(f"redis {_where(url)}: {exc}") from None
    finally:
        client.close()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(rdb, dest)  # Redis renames a finished RDB into place, so any complete file is a consistent one
    except OSError as exc:
        raise BackupError(f"redis RDB {rdb}: cannot be read ({exc.strerror})") from None


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"  # never the password


def _copytree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".staging", "*.tmp"))


def _mirror_owner(source_root: Path, copy_root: Path) -> None:
    """Copies made as root (the backup unit) get the owner and mode of their source, so that restic records, and a
    restore as root brings back, files the service account can still write."""
    if os.geteuid() != 0 or not copy_root.exists():
        return
    fallback = source_root.stat()
    for copy in [copy_root, *copy_root.rglob("*")]:
        try:
            st = (source_root / copy.relative_to(copy_root)).lstat()
        except FileNotFoundError:
            st = fallback
        os.lchown(copy, st.st_uid, st.st_gid)
        if not copy.is_symlink():
            os.chmod(copy, st.st_mode & 0o7777)


def collect(sources: Sources, root: Path) -> Manifest:
    """Fill `root` (an empty directory) and write its manifest last: a backup without a manifest is incomplete."""
    data = sources.data_dir
    if not data.is_dir():
        raise BackupError(f"{data}: data dir not found")
    if not sources.config_dir.is_dir():
        raise BackupError(f"{sources.config_dir}: config dir not found")
    ident = install_id(data, create=True)
    assert ident is not None
    if os.geteuid() == 0:
        st = data.stat()
        os.chown(data / INSTALL_ID_FILE, st.st_uid, st.st_gid)
    parts: list[str] = ["config"]
    (root / "data").mkdir(parents=True)
    shutil.copy2(data / INSTALL_ID_FILE, root / "data" / INSTALL_ID_FILE)
    if sources.store_backend == "redis":
        if not sources.redis_url:
            raise BackupError("store.redis_url: required to back up the redis store")
        redis_snapshot(sources.redis_url, root / REDIS_RDB, sources.redis_rdb, sources.redis_timeout)
        parts.append("redis")
    elif (data / STATE_DB).exists():
        sqlite_copy(data / STATE_DB, root / "data" / STATE_DB)
        parts.append("state")
    if (data / KB_DIR / KB_DB).exists():
        _knowledge(data / KB_DIR, root / "data" / KB_DIR)
        parts.append("knowledge")
    if (data / PLUGINS_DIR).is_dir():
        _copytree(data / PLUGINS_DIR, root / "data" / PLUGINS_DIR)
        parts.append("plugins")
    secrets = secrets_path(data)
    if secrets.exists():
        (root / SECRETS).parent.mkdir(parents=True)
        shutil.copy2(secrets, root / SECRETS)
        parts.append("secrets")
    _copytree(sources.config_dir, root / "config")
    _mirror_owner(data, root / "data")
    _mirror_owner(sources.config_dir, root / "config")
    if secrets.exists():
        _mirror_owner(secrets, root / SECRETS)
    manifest = Manifest(
        format=FORMAT,
        app_version=__version__,
        schema_version=SCHEMA_VERSION,
        install_id=ident,
        created_at=time.time(),
        hostname=socket.gethostname(),
        store_backend=sources.store_backend,
        parts=parts,
        files=checksums(root),
    )
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return manifest
