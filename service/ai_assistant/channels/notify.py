"""Push a notification (an alert, an operator message) into a chat through a configured connector."""

from __future__ import annotations

from collections.abc import Mapping

from ..connectors.base import Connector
from ..errors import DeliveryFailed, DeliveryUncertain
from ..messages import OutboundText
from ..observability import DELIVERIES
from ..store import StateStore

NOTIFY_DEDUPE_SECONDS = 6 * 3600


class Notifier:
    """`await notifier(connector, chat_id, text, idempotency_key)`; the same key within 6 h is sent only once."""

    def __init__(self, connectors: Mapping[str, Connector], store: StateStore) -> None:
        self._connectors = connectors
        self._store = store

    async def __call__(self, connector_name: str, chat_id: str, text: str, idempotency_key: str) -> None:
        connector = self._connectors.get(connector_name)
        if connector is None:
            raise DeliveryFailed(f"no connector named {connector_name!r}")
        if not await self._store.remember(f"notify:{idempotency_key}", NOTIFY_DEDUPE_SECONDS):
            return
        parts = connector.split(text)
        try:
            for i, piece in enumerate(parts, start=1):
                await connector.send(
                    OutboundText(connector_name, chat_id, piece, i, len(parts), f"{idempotency_key}:{i}")
                )
        except DeliveryUncertain:
            # It may have been posted: the key stays remembered, so the sender's next repeat does not post it twice.
            DELIVERIES.labels(connector=connector_name, outcome="unconfirmed").inc()
            raise
        except DeliveryFailed:
            DELIVERIES.labels(connector=connector_name, outcome="failed").inc()
            await self._store.forget(f"notify:{idempotency_key}")  # so that the sender's next repeat tries again
            raise
        DELIVERIES.labels(connector=connector_name, outcome="sent").inc()
