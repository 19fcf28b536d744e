"""The output-channel contract."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..messages import OutboundText


@runtime_checkable
class OutputChannel(Protocol):
    """Delivers one part of an answer. Idempotent on `part.idempotency_key`; raises DeliveryFailed to be retried."""

    name: str

    async def deliver(self, part: OutboundText) -> None: ...
