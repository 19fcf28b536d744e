"""The backup's result for node_exporter's textfile collector (docs/metrics.md): the alerts BackupTooOld,
BackupMetricMissing and BackupFailed watch these series."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

FILE = "ai_assistant_backup.prom"
_SUCCESS = "ai_assistant_backup_last_success_timestamp_seconds"

_HELP = {
    _SUCCESS: "Unix time of the last successful backup.",
    "ai_assistant_backup_last_run_timestamp_seconds": "Unix time the last backup run ended, successful or not.",
    "ai_assistant_backup_last_run_success": "1 when the last backup run succeeded, 0 when it failed.",
    "ai_assistant_backup_last_duration_seconds": "Duration of the last backup run.",
    "ai_assistant_backup_last_size_bytes": "Bytes the last successful backup read (before de-duplication).",
}


def _previous(path: Path, name: str, target: str) -> str | None:
    """A failed run keeps the last success time of the run before it: the age must keep growing, not vanish."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(rf'^{name}\{{target="{re.escape(target)}"\}} (\S+)$', text, re.M)
    return m.group(1) if m else None


def write(
    directory: Path, target: str, *, ok: bool, duration: float, size: int | None, now: float | None = None
) -> Path:
    """Atomically (temporary file in the same directory, then rename): node_exporter never reads half a file."""
    now = time.time() if now is None else now
    path = directory / FILE
    values: dict[str, str | None] = {
        _SUCCESS: f"{now:.3f}" if ok else _previous(path, _SUCCESS, target),
        "ai_assistant_backup_last_run_timestamp_seconds": f"{now:.3f}",
        "ai_assistant_backup_last_run_success": "1" if ok else "0",
        "ai_assistant_backup_last_duration_seconds": f"{duration:.3f}",
        "ai_assistant_backup_last_size_bytes": str(size)
        if ok and size is not None
        else _previous(path, "ai_assistant_backup_last_size_bytes", target),
    }
    lines: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", f'{name}{{target="{target}"}} {value}']
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ai_assistant_backup.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
