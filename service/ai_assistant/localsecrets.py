"""Per-install secrets for a single host: generated on first use into `<data_dir>/secrets.env` (0600), never shipped
with a default. Deployments through Ansible/Pulumi provide their own; this file is for `make up` and bare hosts."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

SECRETS_FILE = "secrets.env"


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


GENERATORS: dict[str, Callable[[], str]] = {
    "AI_ASSISTANT_GENERIC_SECRET": new_webhook_secret,
    "AI_ASSISTANT_ADMIN__TOKEN": lambda: secrets.token_urlsafe(32),
    "AI_ASSISTANT_ALERTS__TOKEN": lambda: secrets.token_urlsafe(32),
}


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Atomic 0600 write: readers see the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# Generated per install by ai-assistant; keep private. Rotate with `ai-assistant rotate-secrets`.\n")
        f.writelines(f"{k}={v}\n" for k, v in sorted(values.items()))
    os.replace(tmp, path)


def ensure_local_secrets(data_dir: Path) -> Path:
    """Create the missing secrets (keeping existing ones stable) with an atomic 0600 write."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRETS_FILE
    values = read_env_file(path)
    missing = {k: gen() for k, gen in GENERATORS.items() if k not in values}
    if missing:
        values.update(missing)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(
                "# Generated per install by ai-assistant; keep private. Rotate with `ai-assistant rotate-secrets`.\n"
            )
            f.writelines(f"{k}={v}\n" for k, v in sorted(values.items()))
        os.replace(tmp, path)
    return path


def secrets_path(data_dir: Path) -> Path:
    return Path(os.environ.get("AI_ASSISTANT_SECRETS_FILE") or data_dir / SECRETS_FILE)


def load_local_secrets(data_dir: Path, *, override: bool = False) -> None:
    """Export the secrets file into the environment. At start, variables already set win; on reload (SIGHUP after a
    rotation) the file wins, and a `_PREVIOUS_` value that the file no longer has is removed."""
    values = read_env_file(secrets_path(data_dir))
    for key, value in values.items():
        if override:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
    if override:
        for key in [k for k in os.environ if k in ROTATIONS.values() and k not in values]:
            del os.environ[key]


# Internal tokens that clients present, and where the previous value lives during a rotation.
ROTATIONS = {
    "AI_ASSISTANT_ADMIN__TOKEN": "AI_ASSISTANT_ADMIN__PREVIOUS_TOKEN",
    "AI_ASSISTANT_ALERTS__TOKEN": "AI_ASSISTANT_ALERTS__PREVIOUS_TOKEN",
}


class RotationError(ValueError):
    pass


def rotate(path: Path, *, finish: bool) -> dict[str, str]:
    """Start a rotation (new current values, old ones kept as previous) or finish it (drop the previous values).
    Returns the keys that changed and their new values."""
    values = read_env_file(path)
    in_progress = [prev for prev in ROTATIONS.values() if prev in values]
    changed: dict[str, str] = {}
    if finish:
        if not in_progress:
            raise RotationError(f"{path}: no rotation in progress")
        for prev in in_progress:
            changed[prev] = ""
            del values[prev]
    else:
        if in_progress:
            raise RotationError(f"{path}: a rotation is in progress; finish it first with --finish")
        for key, prev in ROTATIONS.items():
            if key in values:
                values[prev] = values[key]
                values[key] = GENERATORS[key]()
                changed[key] = values[key]
        if not changed:
            raise RotationError(f"{path}: holds none of {', '.join(ROTATIONS)}")
    write_env_file(path, values)
    return changed
