"""The sensitive-word list file as the console edits it: read, check writable, replace atomically, apply."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..pipeline.filters import SensitiveWordFilter


@dataclass
class WordsFile:
    """The word list the running service filters with, and how to give it a new one."""

    path: Path
    action: Literal["block", "mask"]
    apply: Callable[[SensitiveWordFilter], None]

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def writable(self) -> bool:
        return os.access(self.path if self.path.exists() else self.path.parent, os.W_OK)

    def write(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
