"""The engine contract."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..messages import ChatTurn


@runtime_checkable
class Engine(Protocol):
    name: str

    async def chat(self, turns: list[ChatTurn]) -> str:
        """The assistant's answer. Raises EngineUnavailable once bounded retries are exhausted."""

    async def ready(self) -> bool:
        """Whether the backing server answers (for /readyz)."""

    async def aclose(self) -> None: ...
