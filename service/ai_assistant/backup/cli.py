"""`ai-assistant backup ...`: create, list, verify and restore backups of this install (restic, S3 repository).

The repository and its key come from restic's own environment (RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, and
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for S3), as the backup role's systemd unit sets them; the options override.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import metrics
from .collect import Sources, collect
from .errors import BackupError
from .manifest import install_id, verify
from .restic import Restic
from .restore import restore

backup_app = typer.Typer(
    name="backup",
    help="Back up this install to an S3 bucket (restic, encrypted on the host), list, verify and restore backups.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()

ConfigDir = Annotated[Path, typer.Option("--config-dir", envvar="AI_ASSISTANT_CONFIG_DIR", help="the config dir")]
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="AI_ASSISTANT_DATA_DIR", help="the data dir")]
Repo = Annotated[
    str,
    typer.Option(
        "--repo", envvar="RESTIC_REPOSITORY", help="restic repository, e.g. s3:s3.eu-west-1.amazonaws.com/BUCKET/HOST"
    ),
]
PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", envvar="RESTIC_PASSWORD_FILE", help="file with the repository's encryption key"),
]
Snapshot = Annotated[str, typer.Argument(help="snapshot id (see `backup list`), or latest")]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="AI_ASSISTANT_BACKUP_REDIS_URL",
        help="Redis to snapshot or restore, as a user allowed BGSAVE, FLUSHDB, RESTORE (default: store.redis_url)",
    ),
]


def _restic(repo: str, password_file: Path | None) -> Restic:
    return Restic(repo, password_file)


def _store(config_dir: Path, data_dir: Path, redis_url: str | None) -> tuple[str, str | None]:
    from ..localsecrets import load_local_secrets
    from ..settings import load_settings

    load_local_secrets(data_dir)
    settings = load_settings(config_dir, data_dir)
    url = redis_url or (settings.store.redis_url.get_secret_value() if settings.store.redis_url else None)
    return settings.store.backend, url


@backup_app.command()
def create(
    repo: Repo,
    password_file: PasswordFile = None,
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    redis_url: RedisUrl = None,
    redis_rdb: Annotated[
        Path | None, typer.Option(help="the Redis server's RDB file (default: asked from Redis, CONFIG GET dir)")
    ] = None,
    textfile_dir: Annotated[
        Path | None,
        typer.Option(envvar="AI_ASSISTANT_BACKUP_TEXTFILE_DIR", help="node_exporter textfile directory for the result"),
    ] = None,
    target: Annotated[str, typer.Option(help="`target` label of the metrics")] = "assistant",
    keep_daily: Annotated[int, typer.Option(min=1, help="retention: daily backups kept")] = 7,
    keep_weekly: Annotated[int, typer.Option(min=0, help="retention: weekly backups kept")] = 4,
    keep_monthly: Annotated[int, typer.Option(min=0, help="retention: monthly backups kept")] = 6,
) -> None:
    """Snapshot every stateful part consistently, upload it (creating the repository on first use), apply retention
    (forget --prune) and record the result for node_exporter. A failure is recorded too: BackupFailed pages."""
    started = time.monotonic()
    try:
        backend, url = _store(config_dir, data_dir, redis_url)
        restic = _restic(repo, password_file)
        data_dir.mkdir(parents=True, exist_ok=True)
        # A fixed path, so that restic finds the previous snapshot of the same path and reads only changed files.
        staging = data_dir / ".backup-staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)  # it holds the secrets in clear until restic has encrypted them
        try:
            manifest = collect(Sources(config_dir, data_dir, backend, url, redis_rdb), staging / "backup")
            if not restic.exists():
                restic.init()
            summary = restic.backup(staging / "backup", [f"install:{manifest.install_id}"], socket.gethostname())
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        restic.forget(keep_daily, keep_weekly, keep_monthly, [f"install:{manifest.install_id}"])
    except Exception as exc:  # whatever the cause, the failure must reach the metric that pages
        if textfile_dir is not None:
            metrics.write(textfile_dir, target, ok=False, duration=time.monotonic() - started, size=None)
        if isinstance(exc, OSError):
            raise BackupError(f"{exc.filename or ''}: {exc.strerror or exc}") from None
        raise
    size = int(summary.get("total_bytes_processed", 0))
    if textfile_dir is not None:
        metrics.write(textfile_dir, target, ok=True, duration=time.monotonic() - started, size=size)
    out.print(
        f"backup {summary.get('snapshot_id')} of {', '.join(manifest.parts)}: {size} bytes, "
        f"{time.monotonic() - started:.1f} s",
        highlight=False,
    )


def _restic_time(text: str) -> datetime | None:
    """restic prints local time with nanoseconds and an offset (2026-12-05T09:53:28.237750307+01:00); Python reads
    microseconds."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if m is None:
        return None
    fraction = (m.group(2) or ".0")[:7]
    offset = "+00:00" if m.group(3) in (None, "Z") else m.group(3)
    return datetime.fromisoformat(m.group(1) + fraction + offset).astimezone(UTC)


@backup_app.command("list")
def list_(
    repo: Repo, password_file: PasswordFile = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """The backups in the repository, oldest first."""
    snaps = _restic(repo, password_file).snapshots([])
    if as_json:
        print(json.dumps(snaps, indent=2))
        return
    table = Table("snapshot", "time (UTC)", "host", "install")
    for s in snaps:
        when = _restic_time(str(s.get("time", "")))
        install = next((t.removeprefix("install:") for t in s.get("tags", []) if t.startswith("install:")), "")
        table.add_row(
            str(s["short_id"]), when.strftime("%Y-%m-%d %H:%M:%S") if when else "", str(s["hostname"]), install
        )
    out.print(table)


@backup_app.command("verify")
def verify_(
    repo: Repo,
    password_file: PasswordFile = None,
    snapshot: Snapshot = "latest",
    data_dir: DataDir = Path("data"),
) -> None:
    """Download a backup into a temporary directory and check it as a restore would (manifest, checksums, schema and
    version, install id); changes nothing."""
    restic = _restic(repo, password_file)
    with tempfile.TemporaryDirectory(prefix="ai-assistant-verify-") as tmp:
        restic.restore(snapshot, Path(tmp))
        manifest = verify(Path(tmp), snapshot, expected_install=install_id(data_dir, create=False))
    out.print(
        f"backup {snapshot} OK: {len(manifest.files)} files, parts {', '.join(manifest.parts)}, ai-assistant "
        f"{manifest.app_version}, schema {manifest.schema_version}, made "
        f"{datetime.fromtimestamp(manifest.created_at, tz=UTC):%Y-%m-%d %H:%M:%S} UTC on {manifest.hostname}",
        highlight=False,
    )


@backup_app.command("restore")
def restore_(
    repo: Repo,
    password_file: PasswordFile = None,
    snapshot: Snapshot = "latest",
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    redis_url: RedisUrl = None,
    only: Annotated[
        str | None, typer.Option(help="restore one part only: knowledge (the knowledge base alone)")
    ] = None,
    with_config: Annotated[
        bool, typer.Option(help="also put back the backed-up config dir (a host that Ansible does not configure)")
    ] = False,
    allow_other_install: Annotated[
        bool, typer.Option(help="accept a backup of another install (moving an install deliberately)")
    ] = False,
) -> None:
    """Restore a backup (default: the latest) onto this host with the service stopped: verified in a staging
    directory first, then swapped in; the replaced files are kept in <data dir>/.pre-restore-<time>/."""
    if only not in (None, "knowledge"):
        raise BackupError(f"--only {only}: unknown part (knowledge)")
    started = time.monotonic()
    _, url = _store(config_dir, data_dir, redis_url) if only is None else (None, None)
    done = restore(
        _restic(repo, password_file),
        snapshot,
        config_dir,
        data_dir,
        only_knowledge=only == "knowledge",
        with_config=with_config,
        allow_other_install=allow_other_install,
        redis_url=url,
    )
    m = done.manifest
    age = time.time() - m.created_at
    out.print(
        f"restored {', '.join(done.parts)} from backup {snapshot} (ai-assistant {m.app_version}, made "
        f"{datetime.fromtimestamp(m.created_at, tz=UTC):%Y-%m-%d %H:%M:%S} UTC, {age / 3600:.1f} h old) "
        f"in {time.monotonic() - started:.1f} s",
        highlight=False,
    )
    if done.previous is not None:
        out.print(f"the replaced files are in {done.previous}; delete it once the service runs well", highlight=False)
    out.print("next: systemctl start ai-assistant (or ai-assistant serve)", highlight=False)
    os.sync()
