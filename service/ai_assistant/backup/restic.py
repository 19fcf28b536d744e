"""restic, run as a subprocess: the upload, client-side encryption, de-duplication and retention are restic's.

The repository, its password and the S3 keys come from restic's own environment variables (RESTIC_REPOSITORY,
RESTIC_PASSWORD_FILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), so the systemd unit and an operator's shell give
them the same way. Every failure becomes one line that names its cause.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BackupInvalid, RepositoryError

TAG = "ai-assistant"

# stderr fragments -> the cause an operator acts on. Order matters: the first match wins.
_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("no matching id", "no snapshot found", "no snapshot matched"), "no such snapshot in {repo} (see `backup list`)"),
    (("wrong password", "no key found"), "wrong repository password (the restic key does not open {repo})"),
    (
        ("connection refused", "no such host", "i/o timeout", "network is unreachable", "connect: ", "tls: "),
        "bucket unreachable: {repo}",
    ),
    (("accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch"), "access to {repo} denied"),
    (("nosuchbucket", "bucket does not exist"), "bucket of {repo} does not exist"),
    (
        ("quotaexceeded", "quota exceeded", "entitytoolarge", "no space left", "insufficient storage", "storage full"),
        "repository full: {repo} refuses new data (bucket quota or disk space)",
    ),
    (
        (
            "ciphertext verification failed",
            "hash mismatch",
            "unexpected eof",
            "invalid data returned",
            "pack",
            "checksum",
        ),
        "corrupt or truncated backup in {repo}",
    ),
    (
        ("unable to open config file", "is there a repository", "repository does not exist"),
        "no restic repository at {repo} (run `ai-assistant backup create` once to create it)",
    ),
)


def describe(stderr: str, repo: str) -> str:
    text = stderr.lower()
    for needles, cause in _CAUSES:
        if any(n in text for n in needles):
            return cause.format(repo=repo)
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return f"restic failed on {repo}: {lines[-1] if lines else 'no output'}"


@dataclass
class Restic:
    repository: str
    password_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 3600.0
    binary: str = "restic"

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, "RESTIC_REPOSITORY": self.repository}
        if self.password_file is not None:
            env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
            env.pop("RESTIC_PASSWORD", None)
        return env

    def run(self, *args: str, cwd: Path | None = None, cause: bool = True) -> subprocess.CompletedProcess[str]:
        if shutil.which(self.binary) is None:
            raise RepositoryError(f"{self.binary}: not installed (apt-get install restic)")
        if self.password_file is not None and not self.password_file.is_file():
            raise RepositoryError(f"{self.password_file}: restic password file not found")
        try:
            proc = subprocess.run(
                [self.binary, "--no-lock" if args[0] in ("snapshots", "cat") else "--quiet", *args],
                cwd=cwd,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RepositoryError(
                f"restic {args[0]} on {self.repository}: no result within {self.timeout:.0f} s"
            ) from None
        if proc.returncode != 0 and cause:
            raise RepositoryError(describe(proc.stderr, self.repository))
        return proc

    def exists(self) -> bool:
        proc = self.run("cat", "config", cause=False)
        if proc.returncode == 0:
            return True
        message = describe(proc.stderr, self.repository)
        if message.startswith("no restic repository"):
            return False
        raise RepositoryError(message)

    def init(self) -> None:
        self.run("init")

    def backup(self, directory: Path, tags: list[str], host: str) -> dict[str, Any]:
        # `.` from inside the directory: the snapshot holds the backup's own layout, not the host's path to it.
        proc = self.run("backup", ".", "--json", "--host", host, *(f"--tag={t}" for t in [TAG, *tags]), cwd=directory)
        summary = [json.loads(ln) for ln in proc.stdout.splitlines() if '"summary"' in ln]
        if not summary:
            raise RepositoryError(f"restic backup to {self.repository}: no summary in its output")
        return dict(summary[-1])

    def snapshots(self, tags: list[str]) -> list[dict[str, Any]]:
        proc = self.run("snapshots", "--json", "--tag", ",".join([TAG, *tags]))
        try:
            found = json.loads(proc.stdout or "[]")
        except json.JSONDecodeError:
            raise RepositoryError(f"restic snapshots on {self.repository}: unreadable output") from None
        return sorted(found or [], key=lambda s: str(s["time"]))

    def restore(self, snapshot: str, target: Path) -> None:
        proc = self.run("restore", snapshot, "--target", str(target), cause=False)
        if proc.returncode != 0:
            message = describe(proc.stderr, self.repository)
            raise BackupInvalid(message) if "corrupt" in message else RepositoryError(message)

    def forget(self, keep_daily: int, keep_weekly: int, keep_monthly: int, tags: list[str]) -> None:
        self.run(
            "forget",
            "--prune",
            "--group-by",
            "host,tags",
            "--tag",
            ",".join([TAG, *tags]),
            f"--keep-daily={keep_daily}",
            f"--keep-weekly={keep_weekly}",
            f"--keep-monthly={keep_monthly}",
        )
