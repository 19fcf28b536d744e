"""The engine contract."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from ..messages import ChatTurn


@runtime_checkable
class Engine(Protocol):
    name: str

    async def chat(self, turns: list[ChatTurn]) -> str:
        """The assistant's answer. Raises EngineUnavailable once bounded retries are exhausted."""

    # Optional: `streams = True` and `chat(turns, on_text=...)`, which awaits on_text with the whole answer so far
    # as it is generated (progressive replies, pipeline/progressive.py); on_text must not raise.
    # Optional: `async def count_tokens(self, texts: list[str]) -> list[int]` with the server's own tokenizer; the
    # pipeline falls back to `estimate_tokens` without it.

    async def ready(self) -> bool:
        """Whether the backing server answers (for /readyz)."""

    async def aclose(self) -> None: ...


OnText = Callable[[str], Awaitable[None]]

_WIDE = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate for engines whose server cannot count (`count_tokens` is optional): about three
    characters per token for Latin text and two tokens per CJK character, which small models' tokenizers split
    finely."""
    wide = len(_WIDE.findall(text))
    return 2 * wide + (len(text) - wide + 2) // 3
