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


def load_local_secrets(data_dir: Path) -> None:
    """Export `<data_dir>/secrets.env` into the environment; variables already set win."""
    for key, value in read_env_file(data_dir / SECRETS_FILE).items():
        os.environ.setdefault(key, value)
