"""`platform: dingtalk`: a DingTalk enterprise-internal app robot, over HTTP ("消息接收地址") or DingTalk Stream.

HTTP inbound: headers `timestamp` (ms) and `sign` = Base64(HMAC-SHA256(key=app_secret, timestamp + "\\n" + app_secret)),
within DingTalk's 1-hour window. The signature does NOT cover the body: anyone holding one captured (timestamp, sign)
pair could post any body for an hour. So the body's `robotCode` must be ours, `msgId` is de-duplicated, and answers
only ever go to the callback's `sessionWebhook` on DingTalk's own hosts (or this connector's api_base): DingTalk binds
that URL to the conversation the message came from, while the body's conversationId and senderStaffId are whatever the
poster wrote. A callback without a sessionWebhook is refused, and once the sessionWebhook has expired an answer is
refused rather than sent to those ids (docs/adr/0071-im-connectors.md).

Stream mode (`mode: stream`, no public URL needed): the official dingtalk-stream SDK's frames and handler classes on a
WebSocket this connector opens to the gateway; each robot message is de-duplicated and durably queued through
`sink` before its frame is acknowledged, so a redelivered frame is answered once.

Outbound: the message's sessionWebhook while it is valid, else, for Stream messages (the whole frame arrives on the
connection we opened with the app secret, so its ids are DingTalk's) and for notifications to a configured chat, the
robot OpenAPI (1:1 batchSend / group send) with an accessToken cached and refreshed 5 minutes early.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import Any, ClassVar, Literal
from urllib.parse import quote_plus, urlsplit

import httpx
import websockets
from dingtalk_stream import (  # type: ignore[import-untyped]
    AckMessage,
    CallbackMessage,
    ChatbotHandler,
    ChatbotMessage,
    SystemHandler,
    SystemMessage,
)
from pydantic import Field, SecretStr

from ..errors import DeliveryFailed, Forbidden, MalformedRequest, RejectedRequest, SignatureInvalid
from ..messages import Attachment, InboundMessage, OutboundText, RawRequest, Verdict
from .base import Connector, ConnectorConfig
from .common import check_window, inbound, load_json, same
from .media import MediaUnavailable, download, sniff
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, TokenRejected, retry_after, server_error
from .streaming import StreamDown, StreamLink, supervise
from .tokens import CachedToken

log = logging.getLogger(__name__)

DINGTALK_HOSTS = frozenset({"oapi.dingtalk.com", "api.dingtalk.com"})
WINDOW = 3600  # DingTalk's documented window for the robot callback signature


class DingTalkConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["dingtalk"] = "dingtalk"
    app_key: str = Field(min_length=1, description="Credentials > Client ID (AppKey)")
    app_secret: SecretStr = Field(description="Credentials > Client Secret (AppSecret)")
    robot_code: str = Field(min_length=1, description="Robot configuration > RobotCode (usually the AppKey)")
    corp_id: str | None = Field(None, description="pin chatbotCorpId to this organisation (ding...)")
    mode: Literal["webhook", "stream"] = Field("webhook", description="stream: no public URL, a WebSocket to DingTalk")
    rate_limit_per_second: float = Field(10.0, gt=0)
    chat_rate_limit_per_second: float | None = Field(None, gt=0)


class DingTalkConnector(Connector):
    platform: ClassVar[str] = "dingtalk"
    Config = DingTalkConfig
    config: DingTalkConfig
    max_message_size: ClassVar[int] = 5000  # characters; DingTalk does not publish a text limit for robots

    def __init__(self, name: str, config: DingTalkConfig) -> None:
        super().__init__(name, config)
        self.api_base = (config.api_base or "https://api.dingtalk.com").rstrip("/")
        self.api = PlatformAPI(name, config, lambda: self.http)
        self.token = CachedToken(self._fetch_token, refresh_early=300)
        # A deployment behind a proxy (or a test) may also reply through its api_base, same scheme and host.
        base = urlsplit(config.api_base) if config.api_base else None
        self._proxy = (base.scheme, base.netloc) if base else None
        self._stream: asyncio.Task[None] | None = None
        self.stream_connected = asyncio.Event()
        self.link = StreamLink(name) if config.mode == "stream" else None

    @property
    def path(self) -> str | None:
        return super().path if self.config.mode == "webhook" else None

    # ------------------------------------------------------------------------------------------------ inbound
    async def verify(self, request: RawRequest) -> Verdict:
        ts = request.headers.get("timestamp")
        check_window(ts, WINDOW, header="timestamp", millis=True)
        secret = self.config.app_secret.get_secret_value()
        expected = base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest())
        if not same(expected, request.headers.get("sign", "")):
            raise SignatureInvalid("sign does not match timestamp and app_secret")
        message = self.read(load_json(request.body), authentic=False)
        return Verdict(messages=[message] if message else [])

    def read(self, data: dict[str, Any], *, authentic: bool) -> InboundMessage | None:
        """A robot message body (HTTP body or Stream frame data) -> InboundMessage, with the pins that make up for the
        unsigned body. `authentic`: the body itself is known to come from DingTalk (a Stream frame), so replies may
        also go to its conversationId / senderStaffId; otherwise only to its sessionWebhook."""
        if data.get("robotCode") != self.config.robot_code:
            raise Forbidden("robotCode is not this connector's robot_code")
        if self.config.corp_id and data.get("chatbotCorpId") != self.config.corp_id:
            raise Forbidden("chatbotCorpId is not this connector's corp_id")
        webhook = data.get("sessionWebhook")
        if webhook is None and not authentic:
            raise MalformedRequest(
                "sessionWebhook: required field is missing (the only reply address an unsigned callback body can give)"
            )
        if webhook is not None and not self._reply_allowed(webhook):
            raise Forbidden("sessionWebhook is not on a DingTalk host")
        try:
            msg = ChatbotMessage.from_dict(data)
        except (AttributeError, TypeError, ValueError):  # e.g. "text" that is not an object
            raise MalformedRequest("body is not a DingTalk robot message") from None
        if not msg.message_id or not msg.conversation_id:
            raise MalformedRequest("msgId and conversationId are required")
        attachments = _attachments(data)
        if not attachments and (
            msg.message_type != "text" or msg.text is None or not isinstance(msg.text.content, str)
        ):
            return None  # files, rich text: not handled by this connector
        is_group = msg.conversation_type == "2"
        content = msg.text.content if msg.text is not None and isinstance(msg.text.content, str) else ""
        text = content.replace(f"@{self.config.bot_name}", "")
        return inbound(
            connector=self.name,
            event_id=str(msg.message_id),
            chat_id=str(msg.conversation_id),
            user_id=str(msg.sender_staff_id or msg.sender_id or "unknown"),
            text=" ".join(text.split()),
            is_group=is_group,
            # DingTalk delivers group messages to a robot only when it is @-mentioned.
            mentioned=bool(msg.is_in_at_list) or not is_group,
            reply_context={
                "session_webhook": webhook,
                "session_webhook_expires_ms": data.get("sessionWebhookExpiredTime"),
                "staff_id": msg.sender_staff_id,
                "conversation_type": msg.conversation_type,
                # Whether conversationId and staff_id may be replied to once the sessionWebhook has expired.
                "ids_authentic": authentic,
            },
            attachments=attachments,
        )

    async def fetch_media(self, message: InboundMessage, attachment: Attachment) -> tuple[bytes, str]:
        # A downloadCode resolves only for this robot's own messages, so one from an unsigned body fetches nothing
        # foreign; the downloadUrl DingTalk returns is a short-lived link to its file storage.
        try:
            body = await self.api.call(
                "POST", f"{self.api_base}/v1.0/robot/messageFiles/download", endpoint="messageFiles/download",
                token=self.token, auth=lambda t: {"headers": {"x-acs-dingtalk-access-token": t}},
                json={"downloadCode": attachment.ref, "robotCode": self.config.robot_code}, check=_check,
                limited=False,
            )  # fmt: skip
        except DeliveryFailed as exc:
            raise MediaUnavailable(f"messageFiles/download failed ({exc})") from None
        url = body.get("downloadUrl") if isinstance(body, dict) else None
        where, api = urlsplit(str(url or "")), urlsplit(self.api_base)
        if where.scheme != "https" and (where.scheme, where.netloc) != (api.scheme, api.netloc):
            raise MediaUnavailable("DingTalk gave no https download link")
        data, declared = await download(self.http, str(url), self.config.media_max_bytes)
        return data, sniff(attachment.kind, data, declared)

    def _reply_allowed(self, url: Any) -> bool:
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        official = parts.scheme == "https" and parts.hostname in DINGTALK_HOSTS and parts.port in (None, 443)
        return official or (parts.scheme, parts.netloc) == self._proxy

    # ------------------------------------------------------------------------------------------------ stream mode
    async def start(self) -> None:
        if self.config.mode == "stream" and self._stream is None:
            self._stream = asyncio.create_task(self._run_stream(), name=f"dingtalk-stream-{self.name}")

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream
            self._stream = None
        await super().aclose()

    async def _run_stream(self) -> None:
        """One task, closed by aclose() so a restart never leaves a stale connection stealing messages; supervise()
        reconnects with jittered back-off."""
        assert self.link is not None
        await supervise(self.link, self._stream_session)

    async def _stream_session(self) -> None:
        """One connection: open it, read frames until the gateway closes it or asks us to move (a disconnect frame)."""
        handler = _StreamHandler(self)
        try:
            conn = await self.api.call(
                "POST",
                f"{self.api_base}/v1.0/gateway/connections/open",
                endpoint="gateway/connections/open",
                json={
                    "clientId": self.config.app_key,
                    "clientSecret": self.config.app_secret.get_secret_value(),
                    "subscriptions": [{"type": "CALLBACK", "topic": ChatbotMessage.TOPIC}],
                    "ua": "ai-assistant",
                },
                limited=False,
                idempotent=True,  # posts nothing
            )
            uri = f"{conn['endpoint']}?ticket={quote_plus(conn['ticket'])}"
        except (DeliveryFailed, KeyError, TypeError) as exc:
            if " 401" in str(exc) or " 403" in str(exc):
                raise StreamDown("unauthorized", f"{exc}: app_key / app_secret are wrong or were reset") from None
            raise StreamDown("disconnected", str(exc)) from None
        try:
            async with websockets.connect(uri) as ws:
                self.stream_connected.set()
                assert self.link is not None
                self.link.connected()
                async for raw in ws:
                    ack, disconnect = await handler.route(raw)
                    if ack is not None:
                        await ws.send(json.dumps(ack.to_dict()))
                    if disconnect:  # the gateway asks us to move to a new connection: not a failure
                        return
        except (OSError, websockets.WebSocketException) as exc:
            raise StreamDown("disconnected", f"connection lost ({type(exc).__name__}: {exc})") from None
        finally:
            self.stream_connected.clear()
        raise StreamDown("disconnected", "the gateway closed the connection")

    # ------------------------------------------------------------------------------------------------ outbound
    async def _fetch_token(self) -> tuple[str, float]:
        body = await self.api.call(
            "POST",
            f"{self.api_base}/v1.0/oauth2/accessToken",
            endpoint="oauth2/accessToken",
            json={"appKey": self.config.app_key, "appSecret": self.config.app_secret.get_secret_value()},
            check=_check,
            limited=False,
            idempotent=True,  # posts nothing
        )
        token = body.get("accessToken")
        if not isinstance(token, str):
            raise Fatal("accessToken missing from the answer")
        return token, float(body.get("expireIn", 7200))

    async def send(self, part: OutboundText) -> None:
        question = part.in_reply_to
        ctx = question.reply_context if question else {}
        if question is not None and part.chat_id != question.chat_id:
            raise DeliveryFailed(f"{self.name}: refused: a reply goes only to the conversation of its question")
        webhook, expires = ctx.get("session_webhook"), ctx.get("session_webhook_expires_ms")
        fresh = isinstance(expires, int) and expires / 1000 > time.time() + 30
        if question is not None and ctx.get("ids_authentic") is not True and not (webhook and fresh):
            # The ids below came in an unsigned body: sending there could put the answer into any conversation the
            # robot is in. Only the sessionWebhook is bound to the question's conversation, and it has expired.
            raise DeliveryFailed(
                f"{self.name}: refused: the sessionWebhook has expired and the callback's conversationId is not "
                "signed, so the answer is not sent anywhere else (use mode: stream for answers slower than ~1.5 h)"
            )
        if webhook and fresh and self._reply_allowed(webhook):
            await self.api.call(
                "POST",
                webhook,
                endpoint="sessionWebhook",
                chat=part.chat_id,
                json={"msgtype": "text", "text": {"content": part.text}},
                check=_check,
            )
            return
        params = {"content": part.text}
        if ctx.get("conversation_type") == "1" and ctx.get("staff_id"):
            endpoint = "robot/oToMessages/batchSend"
            body: dict[str, Any] = {"userIds": [ctx["staff_id"]]}
        else:
            endpoint = "robot/groupMessages/send"
            body = {"openConversationId": part.chat_id}
        body.update(robotCode=self.config.robot_code, msgKey="sampleText", msgParam=json.dumps(params))
        await self.api.call(
            "POST",
            f"{self.api_base}/v1.0/{endpoint}",
            endpoint=endpoint,
            chat=part.chat_id,
            token=self.token,
            auth=lambda t: {"headers": {"x-acs-dingtalk-access-token": t}},
            json=body,
            check=_check,
        )


class _StreamHandler(ChatbotHandler):  # type: ignore[misc]
    """The SDK's chatbot callback handler: frames in, AckMessage out."""

    def __init__(self, connector: DingTalkConnector) -> None:
        super().__init__()
        self.connector = connector
        self.system = SystemHandler()

    async def route(self, raw: str | bytes) -> tuple[Any, bool]:
        """(the ack frame to send or None, whether the gateway asked us to disconnect)."""
        try:
            frame = json.loads(raw)
        except ValueError:
            log.warning("%s: stream frame is not JSON; ignored", self.connector.name)
            return None, False
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == SystemMessage.TYPE:  # pings are acknowledged (echoed) as the SDK does
            msg = SystemMessage.from_dict(frame)
            return await self.system.raw_process(msg), msg.headers.topic == SystemMessage.TOPIC_DISCONNECT
        if kind != CallbackMessage.TYPE:
            return None, False
        return await self.raw_process(CallbackMessage.from_dict(frame)), False

    async def process(self, callback: Any) -> tuple[int, str]:
        name = self.connector.name
        try:
            # The frame came down the WebSocket we opened with the app secret: its body is DingTalk's own.
            message = self.connector.read(callback.data if isinstance(callback.data, dict) else {}, authentic=True)
        except RejectedRequest as exc:
            log.warning("%s: stream message refused: %s", name, exc.detail)
            return AckMessage.STATUS_OK, "refused"  # acknowledged so DingTalk does not redeliver what we refuse
        if message is None:
            return AckMessage.STATUS_OK, "ignored"
        if message.is_group and not message.mentioned and self.connector.config.group_mention_only:
            return AckMessage.STATUS_OK, "not mentioned"
        sink = self.connector.sink
        if sink is None:
            return AckMessage.STATUS_SYSTEM_EXCEPTION, "not ready"
        try:
            await sink(message)
        except Exception:  # the store is down: a non-200 ack makes DingTalk redeliver later
            log.exception("%s: could not queue stream message", name)
            return AckMessage.STATUS_SYSTEM_EXCEPTION, "try again"
        return AckMessage.STATUS_OK, "OK"


def _check(resp: httpx.Response) -> Any:
    if resp.status_code == 429:
        raise Retry("HTTP 429", retry_after(resp), throttled=True)
    try:
        body = resp.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    if resp.status_code in (401, 403) and code in (
        "InvalidAuthentication",
        "Forbidden.AccessDenied.AccessTokenInvalid",
    ):
        raise TokenRejected(str(code))
    if isinstance(code, str) and code.startswith("Throttling"):
        raise Retry(code, throttled=True)
    if resp.status_code >= 500:
        server_error(resp)
    if resp.status_code >= 300 or body is None:
        raise Fatal(f"HTTP {resp.status_code} {code or ''}".strip())
    errcode = body.get("errcode", 0)  # sessionWebhook answers use the old {errcode, errmsg} shape
    if errcode == 130101:  # "send too fast"
        raise Retry("errcode 130101", throttled=True)
    if errcode != 0:
        raise Fatal(f"errcode {errcode}: {str(body.get('errmsg', ''))[:200]}")
    return body


def _attachments(data: dict[str, Any]) -> list[Attachment]:
    """A picture or a voice message (`audio`, AMR or Opus) by its downloadCode."""
    content = data.get("content")
    code = content.get("downloadCode") if isinstance(content, dict) else None
    if not isinstance(code, str) or not code:
        return []
    kind = data.get("msgtype")
    if kind == "picture":
        return [Attachment(kind="image", ref=code)]
    if kind == "audio":
        return [Attachment(kind="voice", ref=code)]
    return []
