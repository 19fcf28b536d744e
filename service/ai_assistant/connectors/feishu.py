"""`platform: feishu` and `platform: lark`: Feishu/Lark event subscription v2.0 (webhook mode) and the IM v1 send API.

Inbound, with an Encrypt Key (recommended):
  body      {"encrypt": base64(IV16 || AES-256-CBC(key=SHA256(encrypt_key), PKCS#7(json)))}
  signature X-Lark-Signature = hex(SHA256(X-Lark-Request-Timestamp + X-Lark-Request-Nonce + encrypt_key + raw body)):
            a plain hash keyed by the encrypt key, not an HMAC and not the verification token.
  The url_verification challenge may arrive encrypted but without the X-Lark-* headers (seen in the wild): it is
  answered when it decrypts with our key and carries our verification token, and it queues nothing.
Without an Encrypt Key Feishu signs nothing: the verification token in the body is the only check (docs say so).

Feishu re-pushes an unacknowledged event at 15 s, 5 min, 1 h and 6 h, and the same message may come back under a new
event_id, so messages are de-duplicated on `event_id` and on `message_id` (docs/adr/0071-im-connectors.md).

Long connection (`mode: stream`, no public URL needed): the endpoint from POST /callback/ws/endpoint (app id and
secret), then a WebSocket carrying Feishu's protobuf `Frame`s (connectors/feishu_frame.py). A DATA frame of
type `event` holds the same schema 2.0 body as a webhook, unencrypted (the socket was opened with the app secret); it
is read by the same code, queued, and only then answered with the frame's response (code 200), or 500 when it could not
be queued, so Feishu pushes it again. lark-oapi's own `ws.Client` is not used: it answers a frame as soon as a
synchronous handler returns, so the answer could not wait for the durable enqueue (docs/adr/0072-long-connections.md).

Outbound: POST /open-apis/im/v1/messages/{message_id}/reply with a `uuid` derived from the inbound message id and the
part number, so Feishu itself drops a re-sent part; tenant_access_token cached and refreshed 10 minutes early.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import websockets
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import Field, SecretStr, model_validator

from ..errors import DeliveryFailed, DeliveryUncertain, Forbidden, MalformedRequest, RejectedRequest, SignatureInvalid
from ..messages import Ack, Attachment, InboundMessage, OutboundText, RawRequest, Verdict
from . import feishu_frame as wire
from .base import Connector, ConnectorConfig
from .common import check_window, inbound, load_json, obj, parse_json, same
from .media import MediaUnavailable, download, sniff
from .outbound import (
    Fatal,
    OutboundOptions,
    PlatformAPI,
    Retry,
    TokenRejected,
    default_check,
    retry_after,
    server_error,
)
from .splitting import utf8_bytes
from .streaming import StreamDown, StreamLink, supervise
from .tokens import CachedToken

log = logging.getLogger(__name__)


API_BASES = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}
# Stable namespace for idempotency uuids: the same inbound message and part always give the same uuid.
_UUID_NS = uuid.UUID("5b0f3f3e-2d4a-4c1e-9a57-6f1c1e0a7c71")
# Business codes: token invalid or expired; tenant/chat send-rate limits.
_TOKEN_CODES = {99991661, 99991663, 99991668}
_THROTTLE_CODES = {11232, 230020, 99991400}


class FeishuConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["feishu", "lark"] = "feishu"
    app_id: str = Field(min_length=1, description="App ID (cli_...) from Credentials & Basic Info")
    app_secret: SecretStr = Field(description="App Secret from Credentials & Basic Info")
    verification_token: SecretStr | None = Field(
        None, description="Events & Callbacks > Encryption Strategy > Verification Token; required for mode: webhook"
    )
    mode: Literal["webhook", "stream"] = Field("webhook", description="stream: no public URL, Feishu's long connection")
    encrypt_key: SecretStr | None = Field(None, description="Encryption Strategy > Encrypt Key (turns on signatures)")
    bot_open_id: str | None = Field(None, description="the bot's open_id; asked from /bot/v3/info at start when unset")
    # Retries come up to ~7.1 h after the first push; a request older than this is refused even when its event_id
    # has left the de-duplication store (whose TTL must stay above this window).
    replay_window_seconds: int = Field(27_000, ge=60, le=86_400)
    reply_in_thread: bool = Field(True, description="answer group messages in a thread under the question")
    rate_limit_per_second: float = Field(5.0, gt=0)  # "100/min, 5/sec" per app
    chat_rate_limit_per_second: float | None = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _token_for_webhooks(self) -> FeishuConfig:
        if self.mode == "webhook" and self.verification_token is None:
            raise ValueError("verification_token: required with mode: webhook (how Feishu's calls are recognised)")
        return self


def _content_bytes(text: str) -> int:
    """Size of a text part as Feishu receives it: JSON inside a JSON string, the way the 150 KB limit applies."""
    return utf8_bytes(json.dumps(json.dumps({"text": text}, ensure_ascii=False), ensure_ascii=False))


class FeishuConnector(Connector):
    platform: ClassVar[str] = "feishu"
    Config = FeishuConfig
    config: FeishuConfig
    editable: ClassVar[bool] = True  # chat.update / PUT im/v1/messages/:id: progressive replies
    max_message_size: ClassVar[int] = 150 * 1000  # request bodies up to 150 KB for text
    measure = staticmethod(_content_bytes)

    def __init__(self, name: str, config: FeishuConfig) -> None:
        super().__init__(name, config)
        self.api_base = (config.api_base or API_BASES[config.platform]).rstrip("/")
        self.api = PlatformAPI(name, config, lambda: self.http)
        self.token = CachedToken(self._fetch_token, refresh_early=600)
        key = config.encrypt_key.get_secret_value() if config.encrypt_key else None
        self._encrypt_key = key
        self.bot_open_id = config.bot_open_id
        self._info: asyncio.Task[None] | None = None
        # Built once: the algorithm object validates the key on construction; only the IV differs per message.
        self._aes = algorithms.AES(hashlib.sha256(key.encode()).digest()) if key else None
        self.link = StreamLink(name) if config.mode == "stream" else None
        self._stream: asyncio.Task[None] | None = None
        self._parts: dict[str, list[bytes | None]] = {}  # a payload split over several frames, by message_id
        if key is None and config.mode == "webhook":
            log.warning("%s: no encrypt_key: Feishu will not sign requests; set one in the developer console", name)

    async def start(self) -> None:
        # In the background: a slow or unreachable API must not hold up the service's start.
        if self.bot_open_id is None and self._info is None:
            self._info = asyncio.create_task(self._learn_bot_open_id(), name=f"feishu-bot-info-{self.name}")
        if self.link is not None and self._stream is None:
            self._stream = asyncio.create_task(supervise(self.link, self._session), name=f"feishu-ws-{self.name}")

    @property
    def path(self) -> str | None:
        return super().path if self.config.mode == "webhook" else None

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream
            self._stream = None
        if self._info is not None:
            self._info.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._info
            self._info = None
        await super().aclose()

    async def _learn_bot_open_id(self) -> None:
        """Learn the bot's open_id when it is not configured, so @-mentions are recognised by id, not display name;
        until then (or if it fails) they are matched on bot_name."""
        if self.bot_open_id is None:
            try:
                body = await self.api.call(
                    "GET",
                    f"{self.api_base}/open-apis/bot/v3/info",
                    endpoint="bot_info",
                    token=self.token,
                    auth=lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
                    check=_check,
                    limited=False,
                    idempotent=True,  # posts nothing
                )
                self.bot_open_id = str(body["bot"]["open_id"])
            except (DeliveryFailed, KeyError, TypeError) as exc:
                log.warning("%s: bot info unavailable (%s): mentions are matched on bot_name", self.name, exc)

    # ------------------------------------------------------------------------------------------------ inbound
    async def verify(self, request: RawRequest) -> Verdict:
        signed = "x-lark-signature" in request.headers
        if signed:
            self._check_signature(request)
        outer = load_json(request.body)
        if self._aes is not None:
            if "encrypt" not in outer:
                raise SignatureInvalid("body is not encrypted, but this connector has an encrypt_key")
            payload = load_json(self._decrypt(outer["encrypt"]), "decrypted body")
        else:
            if "encrypt" in outer:
                raise SignatureInvalid("body is encrypted, but this connector has no encrypt_key")
            payload = outer
        header = payload.get("header") if isinstance(payload.get("header"), dict) else None
        token = header.get("token") if header is not None else payload.get("token")
        expected = self.config.verification_token
        if not isinstance(token, str) or expected is None or not same(token, expected.get_secret_value()):
            raise SignatureInvalid("verification token does not match")
        if payload.get("type") == "url_verification":
            challenge = payload.get("challenge")
            if not isinstance(challenge, str):
                raise MalformedRequest("challenge: required field is missing")
            return Verdict(ack=Ack(200, {"challenge": challenge}), handshake=True)
        if self._aes is not None and not signed:
            raise SignatureInvalid("X-Lark-Signature is missing")
        return self.read(payload)

    def read(self, payload: dict[str, Any]) -> Verdict:
        """A schema 2.0 event body (a verified webhook's, or a long-connection frame's) -> Verdict."""
        header = payload.get("header") if isinstance(payload.get("header"), dict) else None
        if header is None:
            raise MalformedRequest("header: only event subscription schema 2.0 is supported")
        if header.get("app_id") != self.config.app_id:
            raise Forbidden("header.app_id is not this connector's app_id")
        if header.get("event_type") != "im.message.receive_v1":
            return Verdict()  # other subscribed events are acknowledged and ignored
        message = self._message(header, payload.get("event"))
        return Verdict(messages=[message] if message else [])

    # ------------------------------------------------------------------------------------------------ long connection
    async def _session(self) -> None:
        assert self.link is not None
        url, ping_interval = await self._endpoint()
        try:
            service = int(parse_qs(urlsplit(url).query)[wire.SERVICE_ID][0])
        except (KeyError, ValueError):
            raise StreamDown("malformed", "callback/ws/endpoint: the URL has no service_id") from None
        try:
            async with websockets.connect(url, proxy=None) as ws:
                self.link.connected()
                pinger = asyncio.create_task(self._ping(ws, service, ping_interval))
                try:
                    async for raw in ws:
                        await self._on_frame(ws, raw)
                finally:
                    pinger.cancel()
        except (OSError, websockets.WebSocketException) as exc:
            raise StreamDown("disconnected", f"long connection lost ({type(exc).__name__}: {exc})") from None
        raise StreamDown("disconnected", "Feishu closed the long connection")

    async def _endpoint(self) -> tuple[str, float]:
        """The WebSocket URL and ping interval from Feishu's endpoint discovery, with the errors told apart."""
        try:
            resp = await self.http.post(
                f"{self.api_base}{wire.GEN_ENDPOINT_URI}",
                json={"AppID": self.config.app_id, "AppSecret": self.config.app_secret.get_secret_value()},
                headers={"locale": "zh"},
            )
            body = resp.json()
        except httpx.HTTPError as exc:
            raise StreamDown("disconnected", f"callback/ws/endpoint: {type(exc).__name__}") from None
        except ValueError:
            raise StreamDown("malformed", f"callback/ws/endpoint: HTTP {resp.status_code}, not JSON") from None
        code = body.get("code") if isinstance(body, dict) else None
        msg = str(body.get("msg", ""))[:200] if isinstance(body, dict) else ""
        if resp.status_code >= 500 or code in (1, 1000040343):  # system busy, internal error: the SDK retries these
            raise StreamDown("disconnected", f"callback/ws/endpoint: HTTP {resp.status_code} code {code} {msg}")
        if code == 1000040350:
            raise StreamDown("conflict", f"callback/ws/endpoint: {msg}: more connections than Feishu allows per app")
        if resp.status_code != 200 or code != 0:  # the SDK's "client error": credentials or the app's settings
            raise StreamDown(
                "unauthorized",
                f"callback/ws/endpoint: code {code} {msg}: app_id / app_secret are wrong, or the app does not use "
                "the long connection (Events & Callbacks > subscription mode)",
            )
        data = obj(body, "data")
        url = data.get("URL")
        if not isinstance(url, str):
            raise StreamDown("malformed", "callback/ws/endpoint: no URL in the answer")
        interval = obj(data, "ClientConfig").get("PingInterval")
        return url, float(interval) if isinstance(interval, int | float) and interval > 0 else 120.0

    async def _ping(self, ws: Any, service: int, interval: float) -> None:
        while True:
            frame = wire.Frame(SeqID=0, LogID=0, service=service, method=wire.FrameType.CONTROL.value)
            frame.headers.add(key=wire.HEADER_TYPE, value=wire.MessageType.PING.value)
            await ws.send(frame.SerializeToString())
            await asyncio.sleep(interval)

    async def _on_frame(self, ws: Any, raw: str | bytes) -> None:
        assert self.link is not None
        frame = wire.Frame()
        try:
            frame.ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
        except wire.DecodeError:
            self.link.problem("malformed", "a frame that is not a protobuf Frame was ignored")
            return
        if frame.method != wire.FrameType.DATA.value:
            return  # pong (may carry new intervals: our pings keep the first), or a control frame we do not use
        headers = {h.key: h.value for h in frame.headers}
        payload = self._whole(headers, frame.payload)
        if payload is None:
            return  # more parts to come
        started = time.monotonic()
        code = 200
        if headers.get(wire.HEADER_TYPE) == wire.MessageType.EVENT.value:
            code = await self._take(headers.get(wire.HEADER_MESSAGE_ID, "?"), payload)
        frame.headers.add(key=wire.HEADER_BIZ_RT, value=str(int((time.monotonic() - started) * 1000)))
        frame.payload = json.dumps({"code": code}).encode()
        await ws.send(frame.SerializeToString())

    def _whole(self, headers: dict[str, str], part: bytes) -> bytes | None:
        try:
            total, seq = int(headers.get(wire.HEADER_SUM, "1")), int(headers.get(wire.HEADER_SEQ, "0"))
        except ValueError:
            total, seq = 1, 0
        if total <= 1:
            return part
        parts = self._parts.setdefault(headers.get(wire.HEADER_MESSAGE_ID, ""), [None] * total)
        if not 0 <= seq < len(parts):
            return None
        parts[seq] = part
        if any(p is None for p in parts):
            return None
        del self._parts[headers.get(wire.HEADER_MESSAGE_ID, "")]
        return b"".join(p for p in parts if p is not None)

    async def _take(self, frame_id: str, payload: bytes) -> int:
        """Queue an event; the frame's answer code: 200 once queued (or unreadable: a retry cannot fix that), 500
        when it could not be queued, so Feishu pushes it again."""
        assert self.link is not None
        try:
            verdict = self.read(load_json(payload, "frame payload"))
        except RejectedRequest as exc:
            self.link.problem("malformed", f"event in frame {frame_id} skipped: {exc.detail}")
            return 200
        try:
            await self.queue(verdict.messages)
        except Exception as exc:
            self.link.problem("store", f"event in frame {frame_id} not queued ({type(exc).__name__}); Feishu retries")
            return 500
        return 200

    def _check_signature(self, request: RawRequest) -> None:
        if self._encrypt_key is None:
            raise SignatureInvalid("signed request, but this connector has no encrypt_key to check it with")
        ts = request.headers.get("x-lark-request-timestamp")
        check_window(ts, self.config.replay_window_seconds, header="X-Lark-Request-Timestamp")
        nonce = request.headers.get("x-lark-request-nonce", "")
        digest = hashlib.sha256(f"{ts}{nonce}{self._encrypt_key}".encode())
        digest.update(request.body)  # not prefix + body: that would copy the body once more
        expected = digest.hexdigest()
        if not same(expected, request.headers["x-lark-signature"]):
            raise SignatureInvalid("X-Lark-Signature does not match the body")

    def _decrypt(self, encrypted: Any) -> bytes:
        assert self._aes is not None
        try:
            # binascii's strict mode refuses what b64decode(validate=True) refuses, without its regular expression.
            raw = binascii.a2b_base64(encrypted, strict_mode=True)
            if len(raw) < 32 or len(raw) % 16:
                raise ValueError("bad length")
            decryptor = Cipher(self._aes, modes.CBC(raw[:16])).decryptor()
            padded = decryptor.update(raw[16:]) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            return unpadder.update(padded) + unpadder.finalize()
        except (TypeError, ValueError, binascii.Error):
            raise SignatureInvalid("encrypt does not decrypt with this connector's encrypt_key") from None

    def _message(self, header: dict[str, Any], event: Any) -> InboundMessage | None:
        if not isinstance(event, dict) or not isinstance(event.get("message"), dict):
            raise MalformedRequest("event.message: required field is missing")
        msg = event["message"]
        sender = obj(event, "sender")
        if sender.get("sender_type") not in (None, "user"):
            return None  # other bots and apps: never answer a machine
        message_id, chat_id = msg.get("message_id"), msg.get("chat_id")
        if not isinstance(message_id, str) or not isinstance(chat_id, str):
            raise MalformedRequest("event.message: message_id and chat_id are required")
        text = _text_of(msg)
        attachments = _attachments(msg) if text is None else []
        if text is None and not attachments:
            return None  # files, stickers, cards: not handled by this connector
        text = text or ""
        mentioned = False
        for mention in msg.get("mentions") or []:
            if not isinstance(mention, dict):
                continue
            key, name = str(mention.get("key", "")), str(mention.get("name", ""))
            open_id = obj(mention, "id").get("open_id")
            is_bot = open_id == self.bot_open_id if self.bot_open_id else name == self.config.bot_name
            mentioned = mentioned or is_bot
            if key:
                text = text.replace(key, "" if is_bot else f"@{name}")
        is_group = msg.get("chat_type") == "group"
        sender_ids = obj(sender, "sender_id")
        return inbound(
            connector=self.name,
            event_id=str(header.get("event_id") or message_id),
            alias_ids=[f"message:{message_id}"],
            chat_id=chat_id,
            user_id=str(sender_ids.get("open_id") or sender_ids.get("user_id") or "unknown"),
            text=" ".join(text.split()) if is_group else text.strip(),
            is_group=is_group,
            mentioned=mentioned or not is_group,
            thread_id=msg.get("thread_id") or msg.get("root_id") or None,
            reply_context={"message_id": message_id},
            attachments=attachments,
        )

    async def fetch_media(self, message: InboundMessage, attachment: Attachment) -> tuple[bytes, str]:
        # A file a user sent is read through the message it came in: GET im/v1/messages/:id/resources/:key.
        message_id = message.reply_context.get("message_id")
        key = attachment.ref or ""
        if not isinstance(message_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", key):
            raise MediaUnavailable("the message names no file")
        kind = "image" if attachment.kind == "image" else "file"
        url = f"{self.api_base}/open-apis/im/v1/messages/{message_id}/resources/{key}?type={kind}"
        headers = {"Authorization": f"Bearer {await self.token.get()}"}
        data, declared = await download(self.http, url, self.config.media_max_bytes, headers=headers)
        return data, sniff(attachment.kind, data, declared)

    # ------------------------------------------------------------------------------------------------ outbound
    async def _fetch_token(self) -> tuple[str, float]:
        body = await self.api.call(
            "POST",
            f"{self.api_base}/open-apis/auth/v3/tenant_access_token/internal",
            endpoint="tenant_access_token",
            json={"app_id": self.config.app_id, "app_secret": self.config.app_secret.get_secret_value()},
            check=_check,
            limited=False,
            idempotent=True,  # posts nothing
        )
        token = body.get("tenant_access_token")
        if not isinstance(token, str):
            raise Fatal("tenant_access_token missing from the answer")
        return token, float(body.get("expire", 7200))

    async def send(self, part: OutboundText) -> None:
        await self._post(part)

    async def post_editable(self, part: OutboundText) -> str:
        data = (await self._post(part)).get("data")
        message_id = data.get("message_id") if isinstance(data, dict) else None
        if not isinstance(message_id, str):
            raise DeliveryUncertain("send_message: the answer carries no message_id")
        return message_id

    async def edit(self, ref: str, part: OutboundText) -> None:
        # PUT /im/v1/messages/:id edits a text message in place (a card would be PATCHed instead).
        await self.api.call(
            "PUT",
            f"{self.api_base}/open-apis/im/v1/messages/{ref}",
            endpoint="edit_message",
            chat=part.chat_id,
            token=self.token,
            auth=lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
            json={"msg_type": "text", "content": json.dumps({"text": part.text}, ensure_ascii=False)},
            check=_check,
            idempotent=True,  # setting the same text twice shows the user nothing new
        )

    async def _post(self, part: OutboundText) -> Any:
        message_id = part.in_reply_to.reply_context.get("message_id") if part.in_reply_to else None
        seed = f"{message_id}:{part.part}" if message_id else part.idempotency_key
        body: dict[str, Any] = {
            "msg_type": "text",
            "content": json.dumps({"text": part.text}, ensure_ascii=False),
            "uuid": str(uuid.uuid5(_UUID_NS, seed)),
        }
        if message_id:
            url = f"{self.api_base}/open-apis/im/v1/messages/{message_id}/reply"
            params: dict[str, str] = {}
            reply = part.in_reply_to
            body["reply_in_thread"] = bool(
                reply and (reply.thread_id or (reply.is_group and self.config.reply_in_thread))
            )
        else:
            url = f"{self.api_base}/open-apis/im/v1/messages"
            params = {"receive_id_type": "chat_id"}
            body["receive_id"] = part.chat_id
        return await self.api.call(
            "POST",
            url,
            endpoint="send_message",
            chat=part.chat_id,
            token=self.token,
            auth=lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
            json=body,
            params=params,
            check=_check,
            idempotent=True,  # Feishu posts one message per uuid within an hour however often it is sent
        )


class LarkConnector(FeishuConnector):
    """Lark (international): the same protocol on open.larksuite.com."""

    platform: ClassVar[str] = "lark"


def _text_of(msg: dict[str, Any]) -> str | None:
    content = parse_json(msg.get("content") or "{}", "event.message.content")
    if not isinstance(content, dict):
        return None
    if msg.get("message_type") == "text":
        text = content.get("text")
        return text if isinstance(text, str) else None
    if msg.get("message_type") == "post":  # rich text: keep the words, drop the layout
        lines = content.get("content")
        words = [
            str(el.get("text", ""))
            for line in (lines if isinstance(lines, list) else [])
            if isinstance(line, list)
            for el in line
            if isinstance(el, dict) and el.get("tag") in ("text", "a", "md")
        ]
        title = content.get("title") or ""
        return " ".join(w for w in [title, *words] if w) or None
    return None


def _attachments(msg: dict[str, Any]) -> list[Attachment]:
    """An image (`image_key`) or a voice message (`audio`, `file_key`; Feishu records voice as Opus in Ogg)."""
    content = parse_json(msg.get("content") or "{}", "event.message.content")
    if not isinstance(content, dict):
        return []
    if msg.get("message_type") == "image" and isinstance(content.get("image_key"), str):
        return [Attachment(kind="image", ref=content["image_key"])]
    if msg.get("message_type") == "audio" and isinstance(content.get("file_key"), str):
        return [Attachment(kind="voice", ref=content["file_key"])]
    return []


def _check(resp: httpx.Response) -> Any:
    if resp.status_code == 429:
        raise Retry("HTTP 429", retry_after(resp, "x-ogw-ratelimit-reset"), throttled=True)
    try:
        body = resp.json()
    except ValueError:
        return default_check(resp)
    code = body.get("code") if isinstance(body, dict) else None
    if code == 0:
        return body
    if code in _TOKEN_CODES:
        raise TokenRejected(f"code {code}")
    if code in _THROTTLE_CODES:
        raise Retry(f"code {code} (rate limited)", throttled=True)
    if resp.status_code >= 500:
        server_error(resp)
    raise Fatal(f"code {code}: {str(body.get('msg', ''))[:200] if isinstance(body, dict) else ''}")
