"""manifest.json: what a backup holds, from which version and install, with a SHA-256 for every file."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import __version__
from .errors import BackupInvalid

MANIFEST = "manifest.json"
FORMAT = 1
# The layout of the state inside a backup (the tables of state.sqlite3 and knowledge.sqlite3, the Redis keys, the
# file names). Bump it with any change a restore of an older backup must convert; a restore refuses a newer one.
SCHEMA_VERSION = 1
INSTALL_ID_FILE = "install-id"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str
    size: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: int
    app_version: str
    schema_version: int
    install_id: str
    created_at: float
    hostname: str
    store_backend: str
    parts: list[str]
    files: dict[str, FileEntry]


def install_id(data_dir: Path, *, create: bool) -> str | None:
    """The install's identity, kept in the data dir: a restore refuses a backup of another install."""
    path = data_dir / INSTALL_ID_FILE
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if value or not create:
        return value or None
    value = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return value


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(root: Path) -> dict[str, FileEntry]:
    return {
        p.relative_to(root).as_posix(): FileEntry(sha256=sha256(p), size=p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def read(root: Path, label: str) -> Manifest:
    path = root / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BackupInvalid(f"backup {label}: no {MANIFEST} (corrupt or truncated backup)") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise BackupInvalid(f"backup {label}: {MANIFEST}: {key}: {err['msg']} (corrupt or truncated backup)") from None


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def verify(root: Path, label: str, *, expected_install: str | None, allow_other_install: bool = False) -> Manifest:
    """Refuse a backup this install cannot take, before anything on the host changes: newer version or schema, another
    install, or any file whose checksum or size differs from the manifest (a truncated or corrupted backup)."""
    manifest = read(root, label)
    if manifest.format > FORMAT or manifest.schema_version > SCHEMA_VERSION:
        raise BackupInvalid(
            f"backup {label}: schema version {manifest.schema_version} (format {manifest.format}) is newer than this "
            f"ai-assistant {__version__} reads ({SCHEMA_VERSION}); upgrade ai-assistant first"
        )
    if _version(manifest.app_version) > _version(__version__):
        raise BackupInvalid(
            f"backup {label}: made by ai-assistant {manifest.app_version}, newer than this {__version__}; "
            "upgrade ai-assistant first"
        )
    if expected_install and manifest.install_id != expected_install and not allow_other_install:
        raise BackupInvalid(
            f"backup {label}: belongs to install {manifest.install_id}, this host is install {expected_install} "
            "(pass --allow-other-install to move an install deliberately)"
        )
    found = checksums(root)
    for name, entry in manifest.files.items():
        got = found.get(name)
        if got is None:
            raise BackupInvalid(f"backup {label}: {name} is missing (corrupt or truncated backup)")
        if got != entry:
            raise BackupInvalid(f"backup {label}: {name} does not match its checksum (corrupt or truncated backup)")
    extra = sorted(set(found) - set(manifest.files))
    if extra:
        raise BackupInvalid(f"backup {label}: {extra[0]} is not in the manifest (tampered or mixed backup)")
    return manifest
