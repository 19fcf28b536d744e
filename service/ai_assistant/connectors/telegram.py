"""`platform: telegram`: the Bot API webhook or getUpdates long polling, and sendMessage.

Inbound: Telegram signs nothing and sends no timestamp; the only proof is the `secret_token` given to setWebhook,
echoed in X-Telegram-Bot-Api-Secret-Token, compared here in constant time. Pending updates are kept for 24 h and
re-sent on any non-2xx, so updates are de-duplicated on update_id (and chat+message_id). The allowed_cidrs of the
connector can add Telegram's published source ranges as a second check.

Long polling (`mode: stream`, no public URL needed): getUpdates with `offset` in a loop. Telegram forgets an update
only when a later getUpdates passes an offset above its update_id, so the offset moves past an update only after it
was durably queued: a crash in between makes Telegram send it again, and the de-duplication on update_id absorbs the
copy. Telegram allows one getUpdates at a time per bot (409 otherwise) and none while a webhook is set (409 too), so
the instances share a lease in the state store and only its holder polls (docs/adr/0072-long-connections.md).

Outbound: sendMessage as a reply to the question (in its forum topic, if any); 4096 UTF-16 code units per message.
The bot token is part of the URL, so errors name the method, never the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from ..errors import DeliveryFailed, DeliveryUncertain, MalformedRequest, SignatureInvalid
from ..messages import Attachment, InboundMessage, OutboundText, RawRequest, Verdict
from ..observability import DUPLICATES
from .base import Connector, ConnectorConfig
from .common import inbound, load_json, obj, same
from .media import MediaUnavailable, download, sniff
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, default_check, server_error
from .splitting import utf16_units
from .streaming import StreamDown, StreamLink, supervise

log = logging.getLogger(__name__)

_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["telegram"] = "telegram"
    bot_token: SecretStr = Field(description="the token @BotFather gave (123456:ABC...)")
    secret_token: SecretStr | None = Field(
        None, description="the secret_token passed to setWebhook (1-256 of A-Z a-z 0-9 _ -); required for mode: webhook"
    )
    mode: Literal["webhook", "stream"] = Field("webhook", description="stream: no public URL, getUpdates long polling")
    poll_timeout_seconds: int = Field(25, ge=1, le=50, description="how long one getUpdates waits for updates")
    bot_username: str | None = Field(None, description="the bot's @username without @; asked with getMe when unset")
    rate_limit_per_second: float = Field(25.0, gt=0)  # ~30 messages/s per bot
    chat_rate_limit_per_second: float | None = Field(1.0, gt=0)  # ~1/s per chat

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _SECRET.match(v.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token)")
        return v

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> TelegramConfig:
        if self.mode == "webhook" and self.secret_token is None:
            raise ValueError("secret_token: required with mode: webhook (it is how Telegram's calls are recognised)")
        return self


class TelegramConnector(Connector):
    platform: ClassVar[str] = "telegram"
    Config = TelegramConfig
    config: TelegramConfig
    editable: ClassVar[bool] = True  # editMessageText: progressive replies
    max_message_size: ClassVar[int] = 4096
    measure = staticmethod(utf16_units)

    def __init__(self, name: str, config: TelegramConfig) -> None:
        super().__init__(name, config)
        base = (config.api_base or "https://api.telegram.org").rstrip("/")
        self._bot_url = f"{base}/bot{config.bot_token.get_secret_value()}"
        self._file_url = f"{base}/file/bot{config.bot_token.get_secret_value()}"
        self.api = PlatformAPI(name, config, lambda: self.http)
        self.username = config.bot_username.lstrip("@").lower() if config.bot_username else None
        self.link = StreamLink(name) if config.mode == "stream" else None
        self._poller: asyncio.Task[None] | None = None
        self._offset: int | None = None  # the next update_id to ask for: everything below it is queued
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A lease outlives one long poll by a wide margin, so a slow store or a slow answer does not hand it over
        # while its holder is still polling (which would make Telegram answer 409 to one of the two).
        self._lease_ttl = config.poll_timeout_seconds + config.http_timeout_seconds + 20

    @property
    def path(self) -> str | None:
        return super().path if self.config.mode == "webhook" else None

    async def start(self) -> None:
        await self._get_me()
        if self.link is not None and self._poller is None:
            self._poller = asyncio.create_task(supervise(self.link, self._poll), name=f"telegram-poll-{self.name}")

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
            if self.leases is not None:
                with contextlib.suppress(Exception):  # the lease expires anyway; a clean stop only hands it over sooner
                    await self.leases.let_go(self._lease_key, self._holder)
        await super().aclose()

    async def _get_me(self) -> None:
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

    # ------------------------------------------------------------------------------------------------ long polling
    @property
    def _lease_key(self) -> str:
        return f"stream:{self.name}"

    async def _poll(self) -> None:
        """One polling session: runs until getUpdates or the store fails (StreamDown), then supervise() reconnects."""
        assert self.link is not None
        while True:
            if not await self._lead():
                self.link.standby()
                await asyncio.sleep(min(5.0, self._lease_ttl / 3))
                continue
            updates = await self._get_updates()
            self.link.connected()
            for update in updates:
                await self._take(update)

    async def _lead(self) -> bool:
        if self.leases is None:
            return True
        try:
            return await self.leases.hold(self._lease_key, self._holder, self._lease_ttl)
        except Exception as exc:  # without the lease no instance may poll: wait for the store
            raise StreamDown("store", f"could not renew the polling lease ({type(exc).__name__})") from exc

    async def _get_updates(self) -> list[Any]:
        wait = self.config.poll_timeout_seconds
        params: dict[str, Any] = {"timeout": wait, "allowed_updates": ["message"]}
        if self._offset is not None:
            params["offset"] = self._offset  # confirms every update below it: they are all queued
        try:
            # The bot token is in the URL: errors name the method and the exception type, never the URL.
            resp = await self.http.post(
                f"{self._bot_url}/getUpdates", json=params, timeout=httpx.Timeout(wait + 10.0, connect=5.0)
            )
        except httpx.HTTPError as exc:
            raise StreamDown("disconnected", f"getUpdates: {type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
            result = body.get("result")
            if not isinstance(result, list):
                raise StreamDown("malformed", "getUpdates: answered ok without a list of updates")
            return result
        description = str(body.get("description", ""))[:200] if isinstance(body, dict) else ""
        status = resp.status_code
        if status in (401, 404):  # Telegram answers 404 to a token of the wrong shape, 401 to a revoked one
            raise StreamDown(
                "unauthorized",
                f"getUpdates: HTTP {status} {description}: bot_token is wrong or was revoked (@BotFather: /token)",
            )
        if status == 409:
            hint = (
                "a webhook is set for this bot, and Telegram allows getUpdates only without one: "
                "call deleteWebhook, or use mode: webhook"
                if "webhook" in description.lower()
                else "another program is polling this bot's token (Telegram allows one getUpdates at a time)"
            )
            raise StreamDown("conflict", f"getUpdates: HTTP 409 {description}: {hint}")
        raise StreamDown("disconnected", f"getUpdates: HTTP {status} {description}".rstrip())

    async def _take(self, update: Any) -> None:
        """Queue one update, then move the offset past it. Malformed updates are counted and skipped (retrying a
        broken update cannot fix it); a store failure leaves the offset where it is, so Telegram sends it again."""
        assert self.link is not None
        update_id = update.get("update_id") if isinstance(update, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            self.link.problem("malformed", "an update without an integer update_id was skipped")
            return
        message = update.get("message")
        inbound = None
        if isinstance(message, dict):
            try:
                inbound = self._message(update_id, message)
            except MalformedRequest as exc:
                self.link.problem("malformed", f"update {update_id} skipped: {exc.detail}")
        if inbound is not None and not (inbound.is_group and not inbound.mentioned and self.config.group_mention_only):
            if self.sink is None:
                raise StreamDown("store", "the queue is not open yet")
            try:
                fresh = await self.sink(inbound)
            except Exception as exc:
                raise StreamDown(
                    "store", f"could not queue update {update_id} ({type(exc).__name__}); Telegram keeps it"
                ) from exc
            if not fresh:
                DUPLICATES.labels(connector=self.name).inc()
                log.info("duplicate delivery of %s acknowledged", inbound.event_id)
        self._offset = max(self._offset or 0, update_id + 1)

    # ------------------------------------------------------------------------------------------------ webhook
    async def verify(self, request: RawRequest) -> Verdict:
        supplied = request.headers.get("x-telegram-bot-api-secret-token")
        secret = self.config.secret_token
        if not supplied or secret is None or not same(supplied, secret.get_secret_value()):
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
        attachments = _attachments(message)
        if attachments and not isinstance(text, str):
            caption = message.get("caption")
            text = caption if isinstance(caption, str) else ""
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
            attachments=attachments,
        )

    async def fetch_media(self, message: InboundMessage, attachment: Attachment) -> tuple[bytes, str]:
        # getFile turns the file_id into a path valid for an hour; the file is then under /file/bot<token>/<path>.
        if not attachment.ref:
            raise MediaUnavailable("the attachment names no file")
        try:
            body = await self.api.call(
                "POST", f"{self._bot_url}/getFile", endpoint="getFile", json={"file_id": attachment.ref}, check=_check,
                limited=False,
            )  # fmt: skip
        except DeliveryFailed as exc:
            raise MediaUnavailable(f"getFile failed ({exc})") from None
        path = obj(body, "result").get("file_path")
        if not isinstance(path, str) or ".." in path:
            raise MediaUnavailable("getFile gave no usable file_path")
        data, declared = await download(self.http, f"{self._file_url}/{path}", self.config.media_max_bytes)
        return data, sniff(attachment.kind, data, declared)

    async def send(self, part: OutboundText) -> None:
        await self._post(part)

    async def post_editable(self, part: OutboundText) -> str:
        message_id = obj(await self._post(part), "result").get("message_id")
        if not isinstance(message_id, int):
            raise DeliveryUncertain("sendMessage: the answer carries no message_id")
        return str(message_id)

    async def edit(self, ref: str, part: OutboundText) -> None:
        body = {"chat_id": part.chat_id, "message_id": int(ref), "text": part.text}
        await self.api.call(
            "POST", f"{self._bot_url}/editMessageText", endpoint="editMessageText", chat=part.chat_id, json=body,
            check=_check_edit, idempotent=True,  # setting the same text twice shows the user nothing new
        )  # fmt: skip

    async def _post(self, part: OutboundText) -> Any:
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
        return await self.api.call(
            "POST", f"{self._bot_url}/sendMessage", endpoint="sendMessage", chat=part.chat_id, json=body, check=_check
        )


def _check_edit(resp: httpx.Response) -> Any:
    # A retried edit that had landed is refused as "message is not modified": the text is already what we want.
    if resp.status_code == 400 and "message is not modified" in resp.text:
        return {"ok": True}
    return _check(resp)


def _attachments(message: dict[str, Any]) -> list[Attachment]:
    """A photo (the largest of the sizes Telegram offers) or a voice message, by file_id."""
    photos = message.get("photo")
    if isinstance(photos, list) and photos and isinstance(photos[-1], dict) and photos[-1].get("file_id"):
        return [Attachment(kind="image", ref=str(photos[-1]["file_id"]))]
    voice = message.get("voice")
    if isinstance(voice, dict) and voice.get("file_id"):
        return [Attachment(kind="voice", ref=str(voice["file_id"]), mime_type=voice.get("mime_type"))]
    return []


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
