"""`platform: generic_im`: the seed's generic IM webhook made real with the Standard Webhooks specification.

Inbound:  POST with `webhook-id`, `webhook-timestamp`, `webhook-signature` (v1, HMAC-SHA256 over "id.ts.body",
          5-minute tolerance) and body {"type":"message","event_id","chat_id","user_id","text"}.
Outbound: signed POSTs to `reply_url` with {"event_id","chat_id","text","part","parts"} and a `webhook-id` derived
          from the event id and part. Standard Webhooks receivers de-duplicate on `webhook-id`, so a send that may have
          arrived (a read timeout) is sent again with the same id rather than given up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ..errors import MalformedRequest, SignatureInvalid, StaleRequest
from ..messages import Ack, Feedback, InboundMessage, OutboundText, RawRequest, Verdict
from .base import Connector, ConnectorConfig
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, retry_after, server_error


class GenericIMConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["generic_im"] = "generic_im"
    app_id: str | None = None
    app_secret: SecretStr = Field(description="the Standard Webhooks secret, whsec_<base64>")
    reply_url: str = Field(description="where answers are POSTed")
    rate_limit_per_second: float = Field(500.0, gt=0)  # our own receiver: no platform limit to respect

    @field_validator("app_secret")
    @classmethod
    def _whsec(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret starting with whsec_ (run `ai-assistant secret`)")
        try:
            Webhook(raw)
        except Exception:
            raise ValueError("is not valid base64 after whsec_") from None
        return v


class GenericFeedback(BaseModel):
    """{"type":"feedback","event_id","chat_id","user_id","rating":"positive"|"negative","answer_event_id"}"""

    model_config = ConfigDict(extra="ignore")

    type: Literal["feedback"]
    event_id: str = Field(min_length=1, max_length=200)
    rating: Literal["positive", "negative"]
    answer_event_id: str | None = Field(None, max_length=200)


class GenericInbound(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"]
    event_id: str = Field(min_length=1, max_length=200)
    chat_id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=20_000)
    is_group: bool = False
    mentioned: bool = True


# One parse of the raw body, straight into the right model (pydantic-core reads the JSON and dispatches on "type").
_EVENT: TypeAdapter[GenericInbound | GenericFeedback] = TypeAdapter(
    Annotated[GenericInbound | GenericFeedback, Field(discriminator="type")]
)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return "body is not valid JSON"
    if err["type"].startswith("union_tag"):
        return "type: must be 'message' or 'feedback'"
    loc = [str(p) for p in err["loc"]][1:]  # drop the union member's tag ("message" / "feedback")
    return f"{'.'.join(loc) or 'body'}: {err['msg']}"


class GenericIMConnector(Connector):
    platform: ClassVar[str] = "generic_im"
    Config = GenericIMConfig
    config: GenericIMConfig

    def __init__(self, name: str, config: GenericIMConfig) -> None:
        super().__init__(name, config)
        self._webhook = Webhook(config.app_secret.get_secret_value())
        self.api = PlatformAPI(name, config, lambda: self.http)

    async def verify(self, request: RawRequest) -> Verdict:
        try:
            self._webhook.verify(request.body, request.headers, json_parse=False)
        except WebhookVerificationError as exc:
            if "timestamp too" in str(exc):
                raise StaleRequest(f"webhook-timestamp outside the 5-minute window ({exc})") from None
            raise SignatureInvalid(f"webhook signature rejected ({exc})") from None
        except (ValueError, UnicodeDecodeError):  # malformed signature header or non-UTF-8 body
            raise SignatureInvalid("webhook signature rejected (malformed header or body)") from None
        try:
            event = _EVENT.validate_json(request.body)
        except ValidationError as exc:
            raise MalformedRequest(_first_problem(exc)) from None
        if isinstance(event, GenericFeedback):
            return Verdict(feedback=[Feedback(event.event_id, event.rating)], ack=Ack(200, {"ok": True}))
        message = InboundMessage(
            connector=self.name,
            event_id=event.event_id,
            chat_id=event.chat_id,
            user_id=event.user_id,
            text=event.text,
            is_group=event.is_group,
            mentioned=event.mentioned,
            alias_ids=[f"webhook-id:{request.headers['webhook-id']}"],
        )
        return Verdict(messages=[message], ack=Ack(200, {"ok": True, "event_id": event.event_id}))

    async def send(self, part: OutboundText) -> None:
        event_id = part.in_reply_to.event_id if part.in_reply_to else part.idempotency_key
        body = json.dumps(
            {"event_id": event_id, "chat_id": part.chat_id, "text": part.text, "part": part.part, "parts": part.parts},
            ensure_ascii=False,
        )
        msg_id = f"{part.idempotency_key}"
        now = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, now, body),
        }
        await self.api.call(
            "POST",
            self.config.reply_url,
            endpoint="reply_url",
            chat=part.chat_id,
            content=body.encode(),
            headers=headers,
            check=_check,
            idempotent=True,  # the same webhook-id on every try: the receiver keeps one copy
        )


def _check(resp: httpx.Response) -> None:
    if resp.status_code == 429:
        raise Retry("HTTP 429", retry_after(resp), throttled=True)
    if resp.status_code >= 500:
        server_error(resp)
    if resp.status_code >= 300:
        raise Fatal(f"HTTP {resp.status_code}")
