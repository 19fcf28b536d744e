"""Errors of the backup tool: each one names its cause on one line (the CLI prints `error: ...` and exits 2)."""

from __future__ import annotations

from ..errors import AssistantError


class BackupError(AssistantError):
    """A backup or restore that cannot go on; nothing was changed on the host."""


class RepositoryError(BackupError):
    """restic could not use the repository: unreachable bucket, wrong key, missing or full repository."""


class BackupInvalid(BackupError):
    """The backup itself is unusable here: corrupt, truncated, from a newer version or from another install."""
