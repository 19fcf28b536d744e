"""`platform: telegram`: the Bot API webhook and sendMessage.

Inbound: Telegram signs nothing and sends no timestamp; the only proof is the `secret_token` given to setWebhook,
echoed in X-Telegram-Bot-Api-Secret-Token, compared here in constant time. Pending updates are kept for 24 h and
re-sent on any non-2xx, so updates are de-duplicated on update_id (and chat+message_id). The allowed_cidrs of the
connector can add Telegram's published source ranges as a second check.

Outbound: sendMessage as a reply to the question (in its forum topic, if any); 4096 UTF-16 code units per message.
The bot token is part of the URL, so errors name the method, never the URL.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from ..errors import DeliveryFailed, MalformedRequest, SignatureInvalid
from ..messages import InboundMessage, OutboundText, RawRequest, Verdict
from .base import Connector, ConnectorConfig
from .common import inbound, load_json, obj, same
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, default_check, server_error
from .splitting import utf16_units

log = logging.getLogger(__name__)

_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["telegram"] = "telegram"
    bot_token: SecretStr = Field(description="the token @BotFather gave (123456:ABC...)")
    secret_token: SecretStr = Field(description="the secret_token passed to setWebhook (1-256 of A-Z a-z 0-9 _ -)")
    bot_username: str | None = Field(None, description="the bot's @username without @; asked with getMe when unset")
    rate_limit_per_second: float = Field(25.0, gt=0)  # ~30 messages/s per bot
    chat_rate_limit_per_second: float | None = Field(1.0, gt=0)  # ~1/s per chat

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, v: SecretStr) -> SecretStr:
        if not _SECRET.match(v.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token)")
        return v


class TelegramConnector(Connector):
    platform: ClassVar[str] = "telegram"
    Config = TelegramConfig
    config: TelegramConfig
    max_message_size: ClassVar[int] = 4096
    measure = staticmethod(utf16_units)

    def __init__(self, name: str, config: TelegramConfig) -> None:
        super().__init__(name, config)
        base = (config.api_base or "https://api.telegram.org").rstrip("/")
        self._bot_url = f"{base}/bot{config.bot_token.get_secret_value()}"
        self.api = PlatformAPI(name, config, lambda: self.http)
        self.username = config.bot_username.lstrip("@").lower() if config.bot_username else None

    async def start(self) -> None:
        if self.username is None:
            try:
                me = await self.api.call(
                    "POST",
                    f"{self._bot_url}/getMe",
                    endpoint="getMe",
                    check=_check,
                    limited=False,
                    idempotent=True,  # posts nothing
                )
                self.username = str(me["result"]["username"]).lower()
            except (DeliveryFailed, KeyError, TypeError) as exc:
                log.warning("%s: getMe failed (%s): group messages count as not mentioned", self.name, exc)

    async def verify(self, request: RawRequest) -> Verdict:
        supplied = request.headers.get("x-telegram-bot-api-secret-token")
        if not supplied or not same(supplied, self.config.secret_token.get_secret_value()):
            raise SignatureInvalid("X-Telegram-Bot-Api-Secret-Token is missing or wrong")
        update = load_json(request.body)
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise MalformedRequest("update_id: required integer field is missing")
        message = update.get("message")
        if not isinstance(message, dict):
            return Verdict()  # edits, channel posts, callbacks: acknowledged, not answered
        inbound = self._message(update_id, message)
        return Verdict(messages=[inbound] if inbound else [])

    def _message(self, update_id: int, message: dict[str, Any]) -> InboundMessage | None:
        chat, sender = obj(message, "chat"), obj(message, "from")
        text = message.get("text")
        if not isinstance(chat.get("id"), int) or not isinstance(message.get("message_id"), int):
            raise MalformedRequest("message: chat.id and message_id are required")
        if not isinstance(text, str) or sender.get("is_bot"):
            return None
        is_group = chat.get("type") in ("group", "supergroup")
        mentioned = False
        if self.username:
            tag = re.compile(rf"@{re.escape(self.username)}\b", re.IGNORECASE)
            mentioned = bool(tag.search(text))
            text = tag.sub("", text)
            replied = obj(obj(message, "reply_to_message"), "from")
            mentioned = mentioned or str(replied.get("username", "")).lower() == self.username
        thread = message.get("message_thread_id") if message.get("is_topic_message") else None
        return inbound(
            connector=self.name,
            event_id=str(update_id),
            alias_ids=[f"msg:{chat['id']}:{message['message_id']}"],
            chat_id=str(chat["id"]),
            user_id=str(sender.get("id", "unknown")),
            text=re.sub(r"[ \t]+", " ", text).strip(),
            is_group=is_group,
            mentioned=mentioned or not is_group,
            thread_id=str(thread) if thread is not None else None,
            reply_context={"message_id": message["message_id"]},
        )

    async def send(self, part: OutboundText) -> None:
        body: dict[str, Any] = {"chat_id": part.chat_id, "text": part.text}
        reply = part.in_reply_to
        if reply is not None:
            if reply.thread_id:
                body["message_thread_id"] = int(reply.thread_id)
            if "message_id" in reply.reply_context:
                body["reply_parameters"] = {
                    "message_id": reply.reply_context["message_id"],
                    "allow_sending_without_reply": True,
                }
        await self.api.call(
            "POST", f"{self._bot_url}/sendMessage", endpoint="sendMessage", chat=part.chat_id, json=body, check=_check
        )


def _check(resp: httpx.Response) -> Any:
    try:
        body = resp.json()
    except ValueError:
        return default_check(resp)
    if isinstance(body, dict) and body.get("ok") is True:
        return body
    params = obj(body, "parameters") if isinstance(body, dict) else {}
    if resp.status_code == 429:
        after = params.get("retry_after")
        raise Retry("HTTP 429", float(after) if isinstance(after, int | float) else None, throttled=True)
    if resp.status_code >= 500:
        server_error(resp)
    description = str(body.get("description", ""))[:200] if isinstance(body, dict) else ""
    raise Fatal(f"HTTP {resp.status_code}: {description}")
