"""An example connector plugin for a minimal IM platform.

Inbound:  POST with `x-im-timestamp` (unix seconds) and `x-im-signature` = hex HMAC-SHA256(secret, "<ts>.<raw body>"),
          body {"event_id", "chat_id", "user_id", "text"}; requests older than five minutes are refused.
Outbound: POST {"chat_id", "text", "idempotency_key"} to `reply_url`, signed the same way.

It uses only the connector contract of ai_assistant.connectors.base, which is all a connector plugin may rely on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import ClassVar, Literal

import httpx
from pydantic import Field, SecretStr

from ai_assistant.connectors.base import Connector, ConnectorConfig
from ai_assistant.errors import DeliveryFailed, MalformedRequest, SignatureInvalid, StaleRequest
from ai_assistant.messages import Ack, InboundMessage, OutboundText, RawRequest, Verdict

__version__ = "1.0.0"
WINDOW_SECONDS = 300


class SimpleIMConfig(ConnectorConfig):
    platform: Literal["im-connector"] = "im-connector"
    secret: SecretStr = Field(min_length=16)
    reply_url: str


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class SimpleIMConnector(Connector):
    platform: ClassVar[str] = "im-connector"
    Config = SimpleIMConfig
    config: SimpleIMConfig

    async def verify(self, request: RawRequest) -> Verdict:
        ts = request.headers.get("x-im-timestamp", "")
        given = request.headers.get("x-im-signature", "")
        if not ts.isdigit() or not given:
            raise SignatureInvalid("x-im-timestamp or x-im-signature missing")
        expected = sign(self.config.secret.get_secret_value().encode(), ts, request.body)
        if not hmac.compare_digest(expected, given):
            raise SignatureInvalid("x-im-signature does not match the body")
        if abs(time.time() - int(ts)) > WINDOW_SECONDS:
            raise StaleRequest("x-im-timestamp outside the 5-minute window")
        try:
            data = json.loads(request.body)
            message = InboundMessage(
                connector=self.name,
                event_id=str(data["event_id"]),
                chat_id=str(data["chat_id"]),
                user_id=str(data["user_id"]),
                text=str(data["text"]),
            )
        except (ValueError, KeyError, TypeError):
            raise MalformedRequest("body must be JSON with event_id, chat_id, user_id and text") from None
        return Verdict(messages=[message], ack=Ack(200, {"ok": True}))

    async def send(self, part: OutboundText) -> None:
        payload = {"chat_id": part.chat_id, "text": part.text, "idempotency_key": part.idempotency_key}
        body = json.dumps(payload).encode()
        ts = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-im-timestamp": ts,
            "x-im-signature": sign(self.config.secret.get_secret_value().encode(), ts, body),
        }
        try:
            resp = await self.http.post(self.config.reply_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{self.name}: reply_url unreachable ({type(exc).__name__})") from None
        if resp.status_code >= 300:
            raise DeliveryFailed(f"{self.name}: reply_url answered HTTP {resp.status_code}")
