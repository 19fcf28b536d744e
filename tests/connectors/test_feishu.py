"""Feishu/Lark specifics: the producer checked against lark-oapi's own verifier, group etiquette, the reply API with
a deterministic uuid, the token cache, retries and refusals. Outbound calls go to the local stand-in."""

from __future__ import annotations

import json
import uuid

import pytest

from ai_assistant.connectors.feishu import FeishuConfig, FeishuConnector, LarkConnector
from ai_assistant.errors import ConfigError, DeliveryFailed
from ai_assistant.messages import InboundMessage, OutboundText
from tests.connectors import producers as p
from tests.connectors.cases import FEISHU
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn
from tests.helpers import wait_until


def _lark_sdk_accepts(req: p.Req) -> int:
    import lark_oapi as lark

    seen: list[object] = []
    handler = (
        lark.EventDispatcherHandler.builder(p.FEISHU_KEY, p.FEISHU_TOKEN)
        .register_p2_im_message_receive_v1(seen.append)
        .build()
    )
    raw = lark.RawRequest()
    raw.uri, raw.body = "/im/feishu", req.body
    raw.headers = dict(req.headers)  # lark-oapi looks headers up case-sensitively: keep Feishu's spelling
    status = int(handler.do(raw).status_code)
    return status if seen or status != 200 else -1


def test_producer_is_genuine_by_lark_oapis_own_verifier() -> None:
    assert _lark_sdk_accepts(FEISHU.genuine(1, "")) == 200
    # ... and the SDK refuses the forged one (with a 500, which is why the edge maps refusals itself).
    assert _lark_sdk_accepts(FEISHU.forged(1, "")["flipped signature"]) == 500


def test_group_message_needs_a_mention_which_is_stripped(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(FEISHU.options(platform.base))
    quiet = p.feishu_request(p.feishu_message("ev-g1", "om_g1", "chatting among ourselves", chat_type="group"))
    assert app.send(quiet).status_code == 200
    assert app.jobs() == []
    asked = p.feishu_request(
        p.feishu_message("ev-g2", "om_g2", "Where is the VPN guide?", chat_type="group", mention_bot=True)
    )
    assert app.send(asked).status_code == 200
    [msg] = app.messages()
    assert msg["text"] == "Where is the VPN guide?"
    assert msg["is_group"] and msg["mentioned"]
    assert msg["alias_ids"] == ["message:om_g2"]


def test_mention_rule_can_be_turned_off(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app({**FEISHU.options(platform.base), "group_mention_only": False})
    quiet = p.feishu_request(p.feishu_message("ev-g3", "om_g3", "anyone?", chat_type="group"))
    assert app.send(quiet).status_code == 200
    assert len(app.jobs()) == 1


def test_other_events_and_bot_senders_are_acknowledged_not_answered(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(FEISHU.options(platform.base))
    other = p.feishu_message("ev-o1", "om_o1")
    other["header"]["event_type"] = "im.chat.member.bot.added_v1"
    by_app = p.feishu_message("ev-o2", "om_o2")
    by_app["event"]["sender"]["sender_type"] = "app"
    # Images and voice are read since issue 21 (tests/conversation/test_media.py); a sticker still is not.
    sticker = p.feishu_message("ev-o3", "om_o3")
    sticker["event"]["message"].update(message_type="sticker", content=json.dumps({"file_key": "sticker_1"}))
    for payload in (other, by_app, sticker):
        assert app.send(p.feishu_request(payload)).status_code == 200
    assert app.jobs() == []


def test_undecryptable_json_is_malformed_not_a_500(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(FEISHU.options(platform.base))
    not_json = p.feishu_request({"x": 1})
    not_json = p.Req(not_json.method, not_json.path, b"{not json", not_json.headers)
    resp = app.send(not_json)
    assert resp.status_code == 401  # the signature covers the body: garbage fails it before parsing
    plain_event_in_cipher = p.feishu_request({"schema": "2.0"})  # decrypts, signed, but no token inside
    assert app.send(plain_event_in_cipher).status_code == 401
    assert app.jobs() == []


@pytest.mark.parametrize(
    "content",
    [
        "{not json",  # broken JSON inside a genuine, decrypted event
        {"text": "an object where Feishu sends JSON text"},  # the wrong type: was a TypeError and a 503
        '{"text": "lone surrogate \\ud800"}',  # not Unicode: pydantic-core refuses it, json.loads did not
    ],
    ids=["broken", "not-text", "lone-surrogate"],
)
def test_bad_message_content_is_a_400_naming_the_field(
    make_app: AppFactory, platform: PlatformStandIn, content: object
) -> None:
    app = make_app(FEISHU.options(platform.base))
    event = p.feishu_message("ev-bad", "om_bad")
    event["event"]["message"]["content"] = content
    resp = app.send(p.feishu_request(event))
    assert resp.status_code == 400
    assert resp.json() == {"error": "malformed", "detail": "event.message.content is not valid JSON"}
    assert app.jobs() == []


def _connector(platform: PlatformStandIn, **extra: object) -> FeishuConnector:
    return FeishuConnector("bot", FeishuConfig.model_validate({**FEISHU.options(platform.base), **extra}))


def _inbound(event_id: str, message_id: str, *, group: bool = False) -> InboundMessage:
    return InboundMessage(
        connector="bot",
        event_id=event_id,
        chat_id="oc_1",
        user_id="ou_1",
        text="q",
        is_group=group,
        reply_context={"message_id": message_id},
    )


@pytest.mark.anyio
async def test_reply_uuid_comes_from_message_id_and_part(platform: PlatformStandIn) -> None:
    c = _connector(platform)
    try:
        first = _inbound("ev-1", "om_same")
        redelivered = _inbound("ev-1-again", "om_same")  # Feishu's re-push under a new event_id
        await c.send(OutboundText("bot", "oc_1", "part one", 1, 2, "ev-1:1", first))
        await c.send(OutboundText("bot", "oc_1", "part one", 1, 2, "ev-1-again:1", redelivered))
        await c.send(OutboundText("bot", "oc_1", "part two", 2, 2, "ev-1:2", first))
    finally:
        await c.aclose()
    sends = platform.sends()
    assert [s.path for s in sends] == ["/open-apis/im/v1/messages/om_same/reply"] * 3
    uuids = [s.body["uuid"] for s in sends]
    assert uuids[0] == uuids[1] != uuids[2]
    assert all(uuid.UUID(u).version == 5 for u in uuids)  # derived, never random
    assert all(len(u) <= 50 for u in uuids)  # Feishu's limit on uuid
    # One token for all three sends, presented as a Bearer token.
    [token_call] = platform.token_calls()
    assert token_call.body == {"app_id": p.FEISHU_APP_ID, "app_secret": p.FEISHU_APP_SECRET}
    assert {s.headers["authorization"] for s in sends} == {"Bearer t-1"}


@pytest.mark.anyio
async def test_group_answers_go_in_a_thread(platform: PlatformStandIn) -> None:
    c = _connector(platform)
    try:
        await c.send(OutboundText("bot", "oc_1", "a", 1, 1, "e:1", _inbound("e", "om_1", group=True)))
        await c.send(OutboundText("bot", "oc_1", "b", 1, 1, "f:1", _inbound("f", "om_2", group=False)))
        await c.send(OutboundText("bot", "oc_9", "notice", 1, 1, "n:1", None))  # no question: a new message
    finally:
        await c.aclose()
    group, direct, notice = platform.sends()
    assert group.body["reply_in_thread"] is True
    assert direct.body["reply_in_thread"] is False
    assert notice.path == "/open-apis/im/v1/messages" and notice.query == {"receive_id_type": "chat_id"}
    assert notice.body["receive_id"] == "oc_9"


@pytest.mark.anyio
async def test_revoked_token_is_replaced_once(platform: PlatformStandIn) -> None:
    c = _connector(platform)
    try:
        await c.send(OutboundText("bot", "oc_1", "a", 1, 1, "e:1", _inbound("e", "om_1")))
        platform.revoke_tokens()
        await c.send(OutboundText("bot", "oc_1", "b", 1, 1, "f:1", _inbound("f", "om_2")))
    finally:
        await c.aclose()
    assert len(platform.token_calls()) == 2
    statuses = [s.headers["authorization"] for s in platform.sends()]
    assert statuses == ["Bearer t-1", "Bearer t-1", "Bearer t-2"]  # refused once, then the fresh token


@pytest.mark.anyio
async def test_throttling_is_retried_and_counted(platform: PlatformStandIn) -> None:
    from prometheus_client import REGISTRY

    def throttled() -> float:
        labels = {"connector": "bot", "endpoint": "send_message", "outcome": "throttled"}
        return REGISTRY.get_sample_value("ai_assistant_platform_api_calls_total", labels) or 0.0

    before = throttled()
    platform.script("/reply", 429, {"code": 99991400, "msg": "too many requests"}, {"x-ogw-ratelimit-reset": "0"})
    platform.script("/reply", 200, {"code": 11232, "msg": "frequency limit"})
    c = _connector(platform)
    try:
        await c.send(OutboundText("bot", "oc_1", "a", 1, 1, "e:1", _inbound("e", "om_1")))
    finally:
        await c.aclose()
    assert len(platform.sends()) == 3
    assert len({s.body["uuid"] for s in platform.sends()}) == 1  # retries reuse the idempotency key
    assert throttled() - before == 2


@pytest.mark.anyio
async def test_persistent_failure_is_bounded_and_visible(platform: PlatformStandIn) -> None:
    from prometheus_client import REGISTRY

    labels = {"connector": "bot", "endpoint": "send_message", "outcome": "failed"}
    before = REGISTRY.get_sample_value("ai_assistant_platform_api_calls_total", labels) or 0.0
    platform.script("/reply", 502, {"error": "bad gateway"}, times=3)
    c = _connector(platform, max_attempts=3, retry_backoff_seconds=0)
    try:
        with pytest.raises(DeliveryFailed, match="send_message: HTTP 502"):
            await c.send(OutboundText("bot", "oc_1", "a", 1, 1, "e:1", _inbound("e", "om_1")))
        platform.script("/reply", 400, {"code": 230002, "msg": "bot not in chat"})
        with pytest.raises(DeliveryFailed, match="code 230002"):  # a definite refusal is not retried
            await c.send(OutboundText("bot", "oc_1", "a", 1, 1, "e:1", _inbound("e", "om_1")))
    finally:
        await c.aclose()
    assert len(platform.sends()) == 3 + 1
    after = REGISTRY.get_sample_value("ai_assistant_platform_api_calls_total", labels) or 0.0
    assert after - before == 2


def test_lark_uses_larksuite_and_the_same_protocol(make_app: AppFactory, platform: PlatformStandIn) -> None:
    options = {**FEISHU.options(platform.base), "platform": "lark"}
    assert LarkConnector("x", FeishuConfig.model_validate({**options, "api_base": None})).api_base == (
        "https://open.larksuite.com"
    )
    assert FeishuConnector(
        "x", FeishuConfig.model_validate({**options, "platform": "feishu", "api_base": None})
    ).api_base == ("https://open.feishu.cn")
    app = make_app(options)
    assert app.send(FEISHU.genuine(7, platform.base)).status_code == 200
    assert app.send(FEISHU.forged(7, platform.base)["flipped signature"]).status_code == 401
    assert len(app.jobs()) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"app_secret": None}, "bot.app_secret: required key is missing"),
        ({"verification_token": "YOUR_APP_SECRET"}, "bot.verification_token: is a placeholder"),
        ({"replay_window_seconds": 5}, "bot.replay_window_seconds: Input should be greater than or equal to 60"),
        ({"app_key": "x"}, "bot.app_key: unknown key"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(
    change: dict[str, object], message: str, make_app: AppFactory, platform: PlatformStandIn
) -> None:
    options = {k: v for k, v in {**FEISHU.options(platform.base), **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        make_app(options)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bot_open_id_is_learned_at_start(make_app: AppFactory, platform: PlatformStandIn) -> None:
    options = {k: v for k, v in FEISHU.options(platform.base).items() if k != "bot_open_id"}
    app = make_app({**options, "bot_name": "Some Other Name"})
    wait_until(lambda: app.connector.bot_open_id == "ou_bot_from_info", 20, "the bot's open_id")
    [info] = [c for c in platform.calls if c.path == "/open-apis/bot/v3/info"]
    assert info.headers["authorization"] == "Bearer t-1"
    payload = p.feishu_message("ev-i1", "om_i1", "hello", chat_type="group", mention_bot=True)
    payload["event"]["message"]["mentions"][0]["id"]["open_id"] = "ou_bot_from_info"
    assert app.send(p.feishu_request(payload)).status_code == 200
    someone_else = p.feishu_message("ev-i2", "om_i2", "hello", chat_type="group", mention_bot=True)  # another open_id
    assert app.send(p.feishu_request(someone_else)).status_code == 200
    assert [m["event_id"] for m in app.messages()] == ["ev-i1"]
