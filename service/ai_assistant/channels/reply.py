"""The default channel: answer in the chat the message came from, through the connector it came in on."""

from __future__ import annotations

from collections.abc import Mapping

from ..connectors.base import Connector
from ..errors import DeliveryFailed, DeliveryUncertain
from ..messages import OutboundText
from ..observability import DELIVERIES


class ReplyChannel:
    name = "reply"

    def __init__(self, connectors: Mapping[str, Connector]) -> None:
        self._connectors = connectors

    async def deliver(self, part: OutboundText) -> None:
        connector = self._connectors.get(part.connector)
        if connector is None:
            raise DeliveryFailed(f"connector {part.connector!r} is not configured any more")
        try:
            ref = part.extra.get("edit")
            if isinstance(ref, str) and connector.editable:  # the final text of a progressive reply
                await connector.edit(ref, part)
            else:
                await connector.send(part)
        except DeliveryUncertain:
            DELIVERIES.labels(connector=part.connector, outcome="unconfirmed").inc()
            raise
        except DeliveryFailed:
            DELIVERIES.labels(connector=part.connector, outcome="failed").inc()
            raise
        DELIVERIES.labels(connector=part.connector, outcome="sent").inc()
