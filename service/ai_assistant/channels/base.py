"""The output-channel contract."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..messages import OutboundText


@runtime_checkable
class OutputChannel(Protocol):
    """Delivers one part of an answer. Idempotent on `part.idempotency_key`; raises DeliveryFailed to be retried, or
    DeliveryUncertain when the part may have arrived and a second send would duplicate it. A channel that sends one
    part in several pieces may also offer `pieces(part)`, so each piece gets its own checkpoint (loader.RoutedChannel).
    """

    name: str

    async def deliver(self, part: OutboundText) -> None: ...
