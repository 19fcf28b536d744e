"""WeCom specifics: 32-byte PKCS#7 padding at every length, the bare echostr, AgentID pinning, events acknowledged,
and message/send with a cached access_token replaced when WeCom says it expired (errcode 42001)."""

from __future__ import annotations

import pytest

from ai_assistant.connectors.wecom import WeComConfig, WeComConnector
from ai_assistant.errors import ConfigError
from ai_assistant.messages import InboundMessage, OutboundText
from tests.connectors import producers as p
from tests.connectors.cases import WECOM
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn


def test_every_padding_length_decrypts(make_app: AppFactory, platform: PlatformStandIn) -> None:
    """wechatpy pads to 32-byte blocks: pad bytes of 17..32 must be accepted too (a 16-byte unpadder would fail)."""
    app = make_app(WECOM.options(platform.base))
    for n in range(40):
        text = "问" * (n % 3) + "x" * n
        assert app.send(p.wecom_post(p.wecom_text(str(8_000_000 + n), text or "?"))).status_code == 200
    texts = [m["text"] for m in app.messages()]
    assert texts == [("问" * (n % 3) + "x" * n) or "?" for n in range(40)]
    assert {m["chat_id"] for m in app.messages()} == {"zhangsan"}


def test_echostr_is_returned_bare(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(WECOM.options(platform.base))
    resp = app.send(p.wecom_echo("5927782489442352469"))
    assert resp.status_code == 200
    assert resp.content == b"5927782489442352469"
    assert resp.headers["content-type"].startswith("text/plain")
    forged = p.wecom_echo("123")
    forged = p.Req("GET", forged.path, b"", {}, {**forged.query, "msg_signature": "0" * 40})
    assert app.send(forged).status_code == 401
    stale = app.send(p.wecom_echo("123", timestamp=1_600_000_000))
    assert stale.status_code == 401 and stale.json()["error"] == "stale"


def test_other_agent_and_events_queue_nothing(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(WECOM.options(platform.base))
    other_agent = p.wecom_text("9000001").replace(f"<AgentID>{p.WECOM_AGENT}</AgentID>", "<AgentID>1000099</AgentID>")
    resp = app.send(p.wecom_post(other_agent))
    assert resp.status_code == 403
    event = (
        f"<xml><ToUserName><![CDATA[{p.WECOM_CORP}]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event>"
        f"<AgentID>{p.WECOM_AGENT}</AgentID></xml>"
    )
    ack = app.send(p.wecom_post(event))
    assert ack.status_code == 200 and ack.content == b""
    not_xml = p.wecom_post(p.wecom_text("9000002"))
    assert app.send(p.Req("POST", not_xml.path, b"not xml", {}, not_xml.query)).status_code == 400
    assert app.jobs() == []


@pytest.mark.anyio
async def test_send_caches_the_token_and_replaces_an_expired_one(platform: PlatformStandIn) -> None:
    c = WeComConnector("bot", WeComConfig.model_validate(WECOM.options(platform.base)))
    question = InboundMessage(connector="bot", event_id="1", chat_id="zhangsan", user_id="zhangsan", text="q")
    try:
        for i in range(3):
            await c.send(OutboundText("bot", "zhangsan", f"part {i}", i + 1, 3, f"1:{i + 1}", question))
        platform.revoke_tokens()
        await c.send(OutboundText("bot", "zhangsan", "later", 1, 1, "2:1", question))
    finally:
        await c.aclose()
    tokens = platform.token_calls()
    assert [t.query for t in tokens] == [{"corpid": p.WECOM_CORP, "corpsecret": p.WECOM_SECRET}] * 2
    sends = platform.sends()
    assert [s.query["access_token"] for s in sends] == ["wx-1", "wx-1", "wx-1", "wx-1", "wx-2"]
    assert sends[0].body == {
        "touser": "zhangsan",
        "msgtype": "text",
        "agentid": p.WECOM_AGENT,
        "text": {"content": "part 0"},
    }


def test_encoding_aes_key_is_checked_at_load(make_app: AppFactory, platform: PlatformStandIn) -> None:
    with pytest.raises(ConfigError, match=r"bot\.encoding_aes_key: must be the 43-character EncodingAESKey"):
        make_app({**WECOM.options(platform.base), "encoding_aes_key": "tooShort"})
