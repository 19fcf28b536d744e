"""`type: webhook`: push each answer part (or a notification) to any HTTP endpoint, signed per Standard Webhooks.

The receiver verifies `webhook-signature` (HMAC-SHA256 over "id.timestamp.body" with the shared whsec_ secret) and
de-duplicates on `webhook-id`, which is the part's idempotency key, so a retried delivery is recognisable as the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from standardwebhooks.webhooks import Webhook

from ..connectors.base import Connector
from ..connectors.outbound import may_have_been_sent, retry_after
from ..errors import DeliveryFailed
from ..messages import OutboundText
from ..observability import AMBIGUOUS_SENDS, DELIVERIES
from .connector import validate_channel_options


class WebhookChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", description="where parts are POSTed")
    secret: SecretStr = Field(description="Standard Webhooks secret, whsec_<base64>")
    timeout_seconds: float = Field(10.0, gt=0, le=120)

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret starting with whsec_")
        try:
            Webhook(raw)
        except Exception:
            raise ValueError("is not valid base64 after whsec_") from None
        return v


class WebhookChannel:
    def __init__(self, name: str, config: WebhookChannelConfig, client: httpx.AsyncClient | None = None) -> None:
        self.name = name
        self.config = config
        self._webhook = Webhook(config.secret.get_secret_value())
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_seconds, connect=5.0))

    @classmethod
    def from_options(
        cls, name: str, options: Mapping[str, object], connectors: Mapping[str, Connector], file: str
    ) -> WebhookChannel:
        return cls(name, validate_channel_options(WebhookChannelConfig, name, options, file))

    async def deliver(self, part: OutboundText) -> None:
        body = json.dumps(
            {
                "type": "answer" if part.in_reply_to else "notification",
                "connector": part.connector,
                "chat_id": part.chat_id,
                "text": part.text,
                "part": part.part,
                "parts": part.parts,
                "in_reply_to": part.in_reply_to.event_id if part.in_reply_to else None,
            },
            ensure_ascii=False,
        )
        now = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": part.idempotency_key,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(part.idempotency_key, now, body),
        }
        try:
            resp = await self._client.post(self.config.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            DELIVERIES.labels(connector=self.name, outcome="failed").inc()
            if may_have_been_sent(exc):
                # Safe to send again: the receiver de-duplicates on webhook-id, which stays the same.
                AMBIGUOUS_SENDS.labels(connector=self.name, handling="resent").inc()
            raise DeliveryFailed(f"channel {self.name}: webhook unreachable ({type(exc).__name__})") from None
        if resp.status_code >= 300:
            DELIVERIES.labels(connector=self.name, outcome="failed").inc()
            if resp.status_code == 504:  # a gateway gave up on a receiver that may have it: the same id goes again
                AMBIGUOUS_SENDS.labels(connector=self.name, handling="resent").inc()
            raise DeliveryFailed(
                f"channel {self.name}: webhook answered HTTP {resp.status_code}",
                retry_after=retry_after(resp) if resp.status_code in (429, 503) else None,
            )
        DELIVERIES.labels(connector=self.name, outcome="sent").inc()

    def secrets(self) -> list[str]:
        return [self.config.secret.get_secret_value()]

    async def aclose(self) -> None:
        await self._client.aclose()
