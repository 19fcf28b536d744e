"""Genuine platform requests, made with each platform's official Python SDK where it has a signer or message model,
otherwise with the platform's published algorithm (written here independently of the connector's code, with a
different crypto library where that applies):

- Feishu/Lark: published algorithm (lark-oapi ships a decryptor and verifier but no encryptor/signer), encrypted with
  pycryptodome; test_feishu cross-checks the output with lark-oapi's own EventDispatcherHandler.
- Slack: slack_sdk.signature.SignatureVerifier.generate_signature.
- WeCom: wechatpy.enterprise.crypto (WeChatCrypto.encrypt_message / PrpCrypto for echostr).
- DingTalk: message bodies from dingtalk_stream.ChatbotMessage; the sign header per the published algorithm
  (no official Python SDK signs robot callbacks).
- Telegram: telegram.Update / Message objects from python-telegram-bot, serialised with to_dict().
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def url(self) -> str:
        return self.path + ("?" + urlencode(self.query) if self.query else "")

    def with_headers(self, **changes: str) -> Req:
        return replace(self, headers={**self.headers, **{k.replace("_", "-"): v for k, v in changes.items()}})


# --------------------------------------------------------------------------------------------------------- Feishu
FEISHU_APP_ID = "cli_a1b2c3d4e5f6"
FEISHU_APP_SECRET = "feishu-app-secret-for-tests"
FEISHU_TOKEN = "feishu-verification-token"
FEISHU_KEY = "feishu-encrypt-key-for-tests"
FEISHU_BOT_OPEN_ID = "ou_bot0000000000000000000000000"


def feishu_encrypt(plain: bytes, key: str = FEISHU_KEY) -> str:
    iv = os.urandom(16)
    cipher = AES.new(hashlib.sha256(key.encode()).digest(), AES.MODE_CBC, iv)
    return base64.b64encode(iv + cipher.encrypt(pad(plain, 16))).decode()


def feishu_message(
    event_id: str,
    message_id: str,
    text: str = "What is our VPN policy?",
    *,
    chat_id: str = "oc_chat1",
    chat_type: str = "p2p",
    mention_bot: bool = False,
    token: str = FEISHU_TOKEN,
    app_id: str = FEISHU_APP_ID,
    thread_id: str | None = None,
) -> dict[str, Any]:
    mentions = []
    if mention_bot:
        text = "@_user_1 " + text
        mentions.append(
            {"key": "@_user_1", "id": {"open_id": FEISHU_BOT_OPEN_ID}, "name": "AI助理", "tenant_key": "t1"}
        )
    message: dict[str, Any] = {
        "message_id": message_id,
        "root_id": thread_id or "",
        "parent_id": "",
        "create_time": str(int(time.time() * 1000)),
        "chat_id": chat_id,
        "chat_type": chat_type,
        "message_type": "text",
        "content": json.dumps({"text": text}, ensure_ascii=False),
        "mentions": mentions,
    }
    if thread_id:
        message["thread_id"] = thread_id
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "token": token,
            "create_time": str(int(time.time() * 1000)),
            "event_type": "im.message.receive_v1",
            "tenant_key": "t1",
            "app_id": app_id,
        },
        "event": {
            "sender": {
                "sender_id": {"open_id": "ou_user1", "union_id": "on_user1", "user_id": "user1"},
                "sender_type": "user",
                "tenant_key": "t1",
            },
            "message": message,
        },
    }


def feishu_request(
    payload: dict[str, Any],
    *,
    key: str | None = FEISHU_KEY,
    timestamp: int | None = None,
    signed: bool = True,
    path: str = "/im/feishu",
) -> Req:
    plain = json.dumps(payload, ensure_ascii=False).encode()
    if key is None:
        return Req("POST", path, plain, {"content-type": "application/json"})
    body = json.dumps({"encrypt": feishu_encrypt(plain, key)}).encode()
    headers = {"content-type": "application/json"}
    if signed:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = base64.b16encode(os.urandom(8)).decode()
        headers.update(
            {
                "X-Lark-Request-Timestamp": ts,
                "X-Lark-Request-Nonce": nonce,
                "X-Lark-Signature": hashlib.sha256((ts + nonce + key).encode() + body).hexdigest(),
            }
        )
    return Req("POST", path, body, headers)


# --------------------------------------------------------------------------------------------------------- Slack
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
SLACK_APP_TOKEN = "xapp-1-A0APP0001-0000000000-standin0app0level0token"
SLACK_BOT_USER = "U0BOT0001"


def slack_event(
    event_id: str, text: str = "What is our VPN policy?", *, channel: str = "D0DM0001", ts: str | None = None, kind="im"
) -> dict[str, Any]:
    ts = ts or f"{time.time():.6f}"
    event: dict[str, Any] = {"type": "message", "user": "U0USER001", "text": text, "ts": ts, "channel": channel}
    if kind == "mention":
        event = {**event, "type": "app_mention", "text": f"<@{SLACK_BOT_USER}> {text}"}
    else:
        event["channel_type"] = kind
    return {
        "token": "deprecated-verification-token",
        "team_id": "T0TEAM001",
        "api_app_id": "A0APP0001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T0TEAM001", "user_id": SLACK_BOT_USER, "is_bot": True}],
    }


def slack_request(
    payload: dict[str, Any],
    *,
    secret: str = SLACK_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
    path: str = "/im/slack",
) -> Req:
    from slack_sdk.signature import SignatureVerifier

    body = json.dumps(payload).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "content-type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body) or "",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return Req("POST", path, body, headers)


# --------------------------------------------------------------------------------------------------------- WeCom
WECOM_CORP = "ww0123456789abcdef"
WECOM_AGENT = 1000002
WECOM_SECRET = "wecom-app-secret-for-tests"
WECOM_TOKEN = "wecomCallbackToken"
WECOM_AES_KEY = base64.b64encode(b"wecom-encoding-aes-key-32-bytes!").decode().rstrip("=")


def wecom_text(msg_id: str, text: str = "What is our VPN policy?", user: str = "zhangsan") -> str:
    return (
        f"<xml><ToUserName><![CDATA[{WECOM_CORP}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId><AgentID>{WECOM_AGENT}</AgentID></xml>"
    )


def _wecom_crypto(corp_id: str, token: str) -> Any:
    from wechatpy.enterprise.crypto import WeChatCrypto

    return WeChatCrypto(token, WECOM_AES_KEY, corp_id)


def wecom_post(
    xml: str,
    *,
    timestamp: int | None = None,
    corp_id: str = WECOM_CORP,
    token: str = WECOM_TOKEN,
    path: str = "/im/wecom",
) -> Req:
    import xmltodict

    ts = str(timestamp if timestamp is not None else int(time.time()))
    nonce = base64.b16encode(os.urandom(5)).decode()
    sealed = xmltodict.parse(_wecom_crypto(corp_id, token).encrypt_message(xml, nonce, ts))["xml"]
    body = (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><AgentID><![CDATA[{WECOM_AGENT}]]></AgentID>"
        f"<Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>"
    ).encode()
    query = {"msg_signature": sealed["MsgSignature"], "timestamp": ts, "nonce": nonce}
    return Req("POST", path, body, {"content-type": "text/xml"}, query)


def wecom_echo(echo_plain: str, *, timestamp: int | None = None, path: str = "/im/wecom") -> Req:
    from wechatpy.crypto import _get_signature
    from wechatpy.enterprise.crypto import PrpCrypto

    crypto = _wecom_crypto(WECOM_CORP, WECOM_TOKEN)
    ts = str(timestamp if timestamp is not None else int(time.time()))
    nonce = "1372623149"
    echostr = PrpCrypto(crypto.key).encrypt(echo_plain, WECOM_CORP)
    echostr = echostr.decode() if isinstance(echostr, bytes) else echostr
    signature = _get_signature(WECOM_TOKEN, ts, nonce, echostr)
    return Req("GET", path, b"", {}, {"msg_signature": signature, "timestamp": ts, "nonce": nonce, "echostr": echostr})


# --------------------------------------------------------------------------------------------------------- DingTalk
DT_APP_KEY = "dingappkey0001"
DT_APP_SECRET = "dingtalk-app-secret-for-tests-0123456789"
DT_ROBOT = "dingappkey0001"
DT_CORP = "dingcorp0001"


def dingtalk_message(
    msg_id: str,
    text: str = "What is our VPN policy?",
    *,
    group: bool = False,
    at_bot: bool = True,
    robot_code: str = DT_ROBOT,
    session_webhook: str = "https://oapi.dingtalk.com/robot/sendBySession?session=abc",
    webhook_ttl_s: int = 5400,
) -> dict[str, Any]:
    from dingtalk_stream import ChatbotMessage, TextContent

    msg = ChatbotMessage()
    msg.message_id = msg_id
    msg.message_type = "text"
    msg.text = TextContent()
    msg.text.content = (" " + text) if group else text
    msg.conversation_id = "cidGroup001==" if group else "cidSingle001=="
    msg.conversation_type = "2" if group else "1"
    msg.conversation_title = "Ops" if group else None
    msg.is_in_at_list = at_bot if group else None
    msg.sender_id = "$:LWCP_v1:$user001"
    msg.sender_staff_id = "staff001"
    msg.sender_nick = "Zhang San"
    msg.sender_corp_id = DT_CORP
    msg.chatbot_corp_id = DT_CORP
    msg.chatbot_user_id = "$:LWCP_v1:$bot001"
    msg.robot_code = robot_code
    msg.session_webhook = session_webhook
    msg.session_webhook_expired_time = int(time.time() * 1000) + webhook_ttl_s * 1000
    msg.create_at = int(time.time() * 1000)
    return dict(msg.to_dict())


def dingtalk_sign(timestamp_ms: str, secret: str = DT_APP_SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def dingtalk_request(
    body: dict[str, Any], *, timestamp_ms: int | None = None, secret: str = DT_APP_SECRET, path: str = "/im/dingtalk"
) -> Req:
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    raw = json.dumps(body, ensure_ascii=False).encode()
    return Req(
        "POST", path, raw, {"content-type": "application/json", "timestamp": ts, "sign": dingtalk_sign(ts, secret)}
    )


def dingtalk_frame(body: dict[str, Any], frame_id: str) -> dict[str, Any]:
    """A DingTalk Stream CALLBACK frame as the gateway sends it (the shape dingtalk_stream.CallbackMessage parses)."""
    from dingtalk_stream import ChatbotMessage

    return {
        "specVersion": "1.0",
        "type": "CALLBACK",
        "headers": {
            "appId": DT_APP_KEY,
            "connectionId": "conn-1",
            "contentType": "application/json",
            "messageId": frame_id,
            "time": str(int(time.time() * 1000)),
            "topic": ChatbotMessage.TOPIC,
        },
        "data": json.dumps(body, ensure_ascii=False),
    }


# --------------------------------------------------------------------------------------------------------- Telegram
TG_BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TG_SECRET = "tg-webhook-secret_0123456789"


def telegram_update(
    update_id: int,
    text: str = "What is our VPN policy?",
    *,
    message_id: int = 10,
    group: bool = False,
    mention: bool = False,
) -> dict[str, Any]:
    from telegram import Chat, Message, MessageEntity, Update, User

    entities: tuple[MessageEntity, ...] = ()
    if mention:
        text = "@assistant_bot " + text
        entities = (MessageEntity(MessageEntity.MENTION, 0, len("@assistant_bot")),)
    chat = Chat(id=-1001234 if group else 777, type=Chat.SUPERGROUP if group else Chat.PRIVATE, title="Ops")
    message = Message(
        message_id=message_id,
        date=datetime.now(tz=UTC),
        chat=chat,
        from_user=User(id=777, first_name="Ann", is_bot=False),
        text=text,
        entities=entities,
    )
    return dict(Update(update_id=update_id, message=message).to_dict())


def telegram_request(update: dict[str, Any], *, secret: str | None = TG_SECRET, path: str = "/im/telegram") -> Req:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return Req("POST", path, json.dumps(update).encode(), headers)
