"""Sensitive-word filter on input and output (seed 3.3), with an Aho-Corasick automaton (pyahocorasick) so the cost
does not grow with the size of the word list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ahocorasick

from ..errors import ConfigError


@dataclass(frozen=True)
class FilterResult:
    text: str
    blocked: bool
    hits: int


class SensitiveWordFilter:
    def __init__(self, words: list[str], action: Literal["block", "mask"]) -> None:
        self.action = action
        self._automaton: ahocorasick.Automaton | None = None
        cleaned = sorted({w.strip().lower() for w in words if w.strip()})
        if cleaned:
            automaton = ahocorasick.Automaton()
            for word in cleaned:
                automaton.add_word(word, len(word))
            automaton.make_automaton()
            self._automaton = automaton

    @classmethod
    def from_file(cls, path: Path | None, action: Literal["block", "mask"]) -> SensitiveWordFilter:
        if path is None:
            return cls([], action)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ConfigError(str(path), "filters.words_file", "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "filters.words_file", f"cannot be read ({exc})") from None
        return cls([ln for ln in lines if not ln.lstrip().startswith("#")], action)

    def apply(self, text: str) -> FilterResult:
        if self._automaton is None:
            return FilterResult(text, False, 0)
        lowered = text.lower()  # same length as text for the scripts we care about, so spans map back
        spans = [(end - length + 1, end + 1) for end, length in self._automaton.iter(lowered)]
        if not spans:
            return FilterResult(text, False, 0)
        if self.action == "block" or len(lowered) != len(text):
            return FilterResult(text, True, len(spans))
        chars = list(text)
        for start, stop in spans:
            for i in range(start, stop):
                chars[i] = "*"
        return FilterResult("".join(chars), False, len(spans))
