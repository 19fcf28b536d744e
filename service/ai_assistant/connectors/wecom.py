"""`platform: wecom`: WeCom (企业微信) self-built app callbacks and message/send.

Inbound: the query carries msg_signature = SHA1(sorted [token, timestamp, nonce, Encrypt]) and the body is
<xml><ToUserName/><AgentID/><Encrypt/></xml>; Encrypt is AES-256-CBC with key = b64decode(EncodingAESKey + "="),
IV = key[:16], PKCS#7 padded to 32-byte blocks, over random16 || len32be || message || receiveid (our corp_id).
The URL check is a GET with the same signature over `echostr`, answered with the decrypted echostr, bare.
WeCom does not check the timestamp itself; we keep a window. It retries a slow answer 3 times within ~15 s, so
messages are de-duplicated on MsgId (events on FromUserName+CreateTime).

Outbound: message/send with an access_token cached for its 7200 s and refreshed 5 minutes early (gettoken is itself
rate-limited); 2048 bytes of UTF-8 per text message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode
from xml.etree.ElementTree import Element

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from pydantic import Field, SecretStr, field_validator

from ..errors import Forbidden, MalformedRequest, SignatureInvalid
from ..messages import Ack, Attachment, InboundMessage, OutboundText, RawRequest, Verdict
from .base import Connector, ConnectorConfig
from .common import check_window, inbound, same
from .media import MediaUnavailable, download, sniff
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, TokenRejected, default_check
from .splitting import utf8_bytes
from .tokens import CachedToken

_TOKEN_CODES = {40001, 40014, 42001}
_THROTTLE_CODES = {-1, 45009, 45033, 45047}


class WeComConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["wecom"] = "wecom"
    corp_id: str = Field(min_length=1, description="My Company > Company Info > Company ID (ww...)")
    agent_id: int = Field(description="the app's AgentId")
    secret: SecretStr = Field(description="the app's Secret")
    token: SecretStr = Field(description="Receive Messages > API settings > Token")
    encoding_aes_key: SecretStr = Field(description="Receive Messages > API settings > EncodingAESKey (43 characters)")
    replay_window_seconds: int = Field(300, ge=30, le=86_400)
    rate_limit_per_second: float = Field(20.0, gt=0)
    chat_rate_limit_per_second: float | None = Field(None, gt=0)

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        try:
            ok = len(raw) == 43 and len(base64.b64decode(raw + "=", validate=True)) == 32
        except binascii.Error:
            ok = False
        if not ok:
            raise ValueError("must be the 43-character EncodingAESKey from the WeCom console")
        return v


class WeComConnector(Connector):
    platform: ClassVar[str] = "wecom"
    Config = WeComConfig
    config: WeComConfig
    max_message_size: ClassVar[int] = 2048
    measure = staticmethod(utf8_bytes)
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")

    def __init__(self, name: str, config: WeComConfig) -> None:
        super().__init__(name, config)
        self.api_base = (config.api_base or "https://qyapi.weixin.qq.com").rstrip("/")
        self.api = PlatformAPI(name, config, lambda: self.http)
        self.token = CachedToken(self._fetch_token, refresh_early=300)
        self._key = base64.b64decode(config.encoding_aes_key.get_secret_value() + "=")

    # ------------------------------------------------------------------------------------------------ inbound
    async def verify(self, request: RawRequest) -> Verdict:
        q = request.query
        signature, ts, nonce = q.get("msg_signature"), q.get("timestamp"), q.get("nonce")
        if not signature or nonce is None:
            raise SignatureInvalid("msg_signature and nonce are required in the query")
        check_window(ts, self.config.replay_window_seconds, header="timestamp")
        assert ts is not None
        if request.method == "GET":
            echostr = q.get("echostr")
            if not echostr:
                raise MalformedRequest("echostr: required query parameter is missing")
            self._check_signature(signature, ts, nonce, echostr)
            # The answer is the plaintext itself: no quotes, BOM or newline, or WeCom refuses the URL.
            return Verdict(ack=Ack(200, self._decrypt(echostr).decode(), "text/plain"), handshake=True)
        envelope = _xml(request.body, "body")
        encrypted = _text(envelope, "Encrypt")
        if not encrypted:
            raise MalformedRequest("Encrypt: required element is missing")
        self._check_signature(signature, ts, nonce, encrypted)
        msg = _xml(self._decrypt(encrypted), "decrypted message")
        agent = _text(msg, "AgentID")
        if agent is not None and agent != str(self.config.agent_id):
            raise Forbidden("AgentID is not this connector's agent_id")
        ack = Ack(200, "", "text/plain")  # an empty 200 means "received, no passive reply"
        kind = _text(msg, "MsgType")
        media = kind in ("image", "voice")
        if kind != "text" and not media:
            return Verdict(ack=ack)  # events (enter_agent, ...), files, video: acknowledged, not answered
        user, created, content = _text(msg, "FromUserName"), _text(msg, "CreateTime"), _text(msg, "Content")
        media_id = _text(msg, "MediaId")
        if not user or (content is None and not media) or (media and not media_id):
            raise MalformedRequest("FromUserName and Content (MediaId for image and voice) are required")
        msg_id = _text(msg, "MsgId") or f"{user}:{created}"
        attachments = [Attachment(kind="image" if kind == "image" else "voice", ref=media_id)] if media else []
        message = inbound(
            connector=self.name, event_id=msg_id, chat_id=user, user_id=user, text=(content or "").strip(),
            is_group=False, attachments=attachments,
        )  # fmt: skip
        return Verdict(messages=[message], ack=ack)

    async def fetch_media(self, message: InboundMessage, attachment: Attachment) -> tuple[bytes, str]:
        # media/get answers the file itself, or a JSON error (an expired media id: media lives three days).
        if not attachment.ref:
            raise MediaUnavailable("the message names no file")
        token = await self.token.get()
        url = f"{self.api_base}/cgi-bin/media/get?" + urlencode({"access_token": token, "media_id": attachment.ref})
        data, declared = await download(self.http, url, self.config.media_max_bytes)
        return data, sniff(attachment.kind, data, declared)

    def _check_signature(self, signature: str, ts: str, nonce: str, encrypted: str) -> None:
        token = self.config.token.get_secret_value()
        expected = hashlib.sha1("".join(sorted([token, ts, nonce, encrypted])).encode()).hexdigest()  # noqa: S324
        if not same(expected, signature):
            raise SignatureInvalid("msg_signature does not match")

    def _decrypt(self, encrypted: str) -> bytes:
        try:
            raw = base64.b64decode(encrypted, validate=True)
            if not raw or len(raw) % 16:
                raise ValueError("bad length")
            decryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).decryptor()
            plain = decryptor.update(raw) + decryptor.finalize()
            pad = plain[-1]
            # WeCom pads to 32-byte blocks (not AES's 16): a pad byte of 1..32, all equal.
            if not 1 <= pad <= 32 or plain[-pad:] != bytes([pad]) * pad:
                raise ValueError("bad padding")
            content = plain[16:-pad]
            (length,) = struct.unpack(">I", content[:4])
            message, receive_id = content[4 : 4 + length], content[4 + length :]
            if len(message) != length:
                raise ValueError("bad length field")
        except (ValueError, struct.error, binascii.Error):
            raise SignatureInvalid("Encrypt does not decrypt with this connector's encoding_aes_key") from None
        if receive_id.decode(errors="replace") != self.config.corp_id:
            raise Forbidden("the message is addressed to another corp_id")
        return message

    # ------------------------------------------------------------------------------------------------ outbound
    async def _fetch_token(self) -> tuple[str, float]:
        body = await self.api.call(
            "GET",
            f"{self.api_base}/cgi-bin/gettoken",
            endpoint="gettoken",
            params={"corpid": self.config.corp_id, "corpsecret": self.config.secret.get_secret_value()},
            check=_check,
            limited=False,
            idempotent=True,  # posts nothing
        )
        token = body.get("access_token")
        if not isinstance(token, str):
            raise Fatal("access_token missing from the answer")
        return token, float(body.get("expires_in", 7200))

    async def send(self, part: OutboundText) -> None:
        await self.api.call(
            "POST",
            f"{self.api_base}/cgi-bin/message/send",
            endpoint="message/send",
            chat=part.chat_id,
            token=self.token,
            auth=lambda t: {"params": {"access_token": t}},
            json={
                "touser": part.chat_id,
                "msgtype": "text",
                "agentid": self.config.agent_id,
                "text": {"content": part.text},
            },
            check=_check,
        )


def _xml(data: bytes, what: str) -> Element:
    try:
        return fromstring(data)
    except (ParseError, DefusedXmlException, ValueError):
        raise MalformedRequest(f"{what} is not valid XML") from None


def _text(root: Element, tag: str) -> str | None:
    node = root.find(tag)
    return node.text if node is not None and node.text is not None else None


def _check(resp: httpx.Response) -> Any:
    body = default_check(resp)
    code = body.get("errcode", 0) if isinstance(body, dict) else None
    if code == 0:
        return body
    if code in _TOKEN_CODES:
        raise TokenRejected(f"errcode {code}")
    if code in _THROTTLE_CODES:
        raise Retry(f"errcode {code} (busy or rate limited)", throttled=code != -1)
    errmsg = str(body.get("errmsg", ""))[:200] if isinstance(body, dict) else ""
    raise Fatal(f"errcode {code}: {errmsg}")
