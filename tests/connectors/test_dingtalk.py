"""DingTalk specifics: the unsigned body and the pins that make up for it, group @-etiquette, replies through the
sessionWebhook or (once it expired) the robot OpenAPI with a cached token, and Stream mode: CALLBACK frames over a
real WebSocket from the stand-in gateway, acknowledged with the SDK's AckMessage and de-duplicated into one job."""

from __future__ import annotations

import json
import logging

import pytest

from ai_assistant.connectors.dingtalk import DingTalkConfig, DingTalkConnector
from ai_assistant.errors import DeliveryFailed
from ai_assistant.messages import InboundMessage, OutboundText
from tests.connectors import producers as p
from tests.connectors.cases import DINGTALK
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn
from tests.helpers import wait_until


def test_body_is_not_signed_so_only_pinned_bodies_pass(make_app: AppFactory, platform: PlatformStandIn) -> None:
    """Documents DingTalk's weakness: a captured (timestamp, sign) pair verifies any body. What an attacker can do
    with it is bounded by the pins: our robotCode, our corp, replies only to DingTalk hosts (see cases.py)."""
    app = make_app(DINGTALK.options(platform.base))
    good = DINGTALK.genuine(1, platform.base)
    swapped = p.Req(
        good.method, good.path, json.dumps(p.dingtalk_message("msg-swapped", "other words")).encode(), good.headers
    )
    assert app.send(swapped).status_code == 200
    assert [m["text"] for m in app.messages()] == ["other words"]
    foreign_corp = p.dingtalk_message("msg-corp")
    foreign_corp["chatbotCorpId"] = "dingothercorp"
    assert app.send(p.dingtalk_request(foreign_corp)).status_code == 403
    for hook in (
        "http://oapi.dingtalk.com/robot/x",  # not TLS
        "https://oapi.dingtalk.com.evil.example/robot/x",
        "https://oapi.dingtalk.com@evil.example/robot/x",  # userinfo trick: the host is evil.example
        "https://oapi.dingtalk.com:8443/robot/x",
    ):
        resp = app.send(p.dingtalk_request(p.dingtalk_message("msg-hook", session_webhook=hook)))
        assert resp.status_code == 403, hook
    assert len(app.jobs()) == 1


def test_group_needs_the_at_list(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app({**DINGTALK.options(platform.base), "bot_name": "AI助理"})
    not_me = p.dingtalk_message("msg-g1", "chatting", group=True, at_bot=False)
    assert app.send(p.dingtalk_request(not_me)).status_code == 200
    assert app.jobs() == []
    me = p.dingtalk_message("msg-g2", "@AI助理 Where is the VPN guide?", group=True)
    assert app.send(p.dingtalk_request(me)).status_code == 200
    [msg] = app.messages()
    assert msg["text"] == "Where is the VPN guide?"
    assert msg["is_group"] and msg["chat_id"] == "cidGroup001=="


def _connector(platform: PlatformStandIn, **extra: object) -> DingTalkConnector:
    return DingTalkConnector("bot", DingTalkConfig.model_validate({**DINGTALK.options(platform.base), **extra}))


def _question(platform: PlatformStandIn, *, group: bool, webhook_ttl_s: int, authentic: bool = False) -> InboundMessage:
    """A question as read from an HTTP callback (authentic=False: only the timestamp was signed) or from a Stream
    frame (authentic=True)."""
    data = p.dingtalk_message(
        "m1",
        group=group,
        webhook_ttl_s=webhook_ttl_s,
        session_webhook=f"{platform.base}/robot/sendBySession?session=s1",
    )
    connector = _connector(platform)
    msg = connector.read(data, authentic=authentic)
    assert msg is not None
    return msg


@pytest.mark.anyio
async def test_reply_through_the_session_webhook_while_valid(platform: PlatformStandIn) -> None:
    c = _connector(platform)
    try:
        await c.send(
            OutboundText(
                "bot", "cidSingle001==", "hello", 1, 1, "m1:1", _question(platform, group=False, webhook_ttl_s=3600)
            )
        )
    finally:
        await c.aclose()
    [sent] = platform.sends()
    assert sent.path == "/robot/sendBySession" and sent.query == {"session": "s1"}
    assert sent.body == {"msgtype": "text", "text": {"content": "hello"}}
    assert platform.token_calls() == []  # the sessionWebhook needs no token


@pytest.mark.anyio
async def test_expired_session_webhook_falls_back_to_the_openapi_for_stream_messages(platform: PlatformStandIn) -> None:
    c = _connector(platform)
    try:
        direct = _question(platform, group=False, webhook_ttl_s=-10, authentic=True)
        group = _question(platform, group=True, webhook_ttl_s=-10, authentic=True)
        await c.send(OutboundText("bot", "cidSingle001==", "to you", 1, 1, "m1:1", direct))
        await c.send(OutboundText("bot", "cidGroup001==", "to all", 1, 1, "m2:1", group))
    finally:
        await c.aclose()
    one, many = platform.sends()
    assert one.path == "/v1.0/robot/oToMessages/batchSend"
    assert one.body["userIds"] == ["staff001"] and one.body["robotCode"] == p.DT_ROBOT
    assert json.loads(one.body["msgParam"]) == {"content": "to you"}
    assert many.path == "/v1.0/robot/groupMessages/send" and many.body["openConversationId"] == "cidGroup001=="
    [token] = platform.token_calls()
    assert token.body == {"appKey": p.DT_APP_KEY, "appSecret": p.DT_APP_SECRET}
    assert {one.headers["x-acs-dingtalk-access-token"], many.headers["x-acs-dingtalk-access-token"]} == {"dt-1"}


@pytest.mark.anyio
async def test_http_callbacks_are_answered_only_through_their_session_webhook(platform: PlatformStandIn) -> None:
    """An HTTP callback's conversationId and senderStaffId are not signed: once its sessionWebhook has expired the
    answer is refused, never sent to those ids through the OpenAPI (they could name any chat the robot is in)."""
    c = _connector(platform)
    try:
        for group in (False, True):
            question = _question(platform, group=group, webhook_ttl_s=-10)
            with pytest.raises(DeliveryFailed, match="sessionWebhook has expired"):
                await c.send(OutboundText("bot", question.chat_id, "answer", 1, 1, "m1:1", question))
    finally:
        await c.aclose()
    assert platform.calls == []  # not even a token was asked for


@pytest.mark.anyio
async def test_a_reply_never_goes_to_another_conversation(platform: PlatformStandIn) -> None:
    c = _connector(platform)
    question = _question(platform, group=False, webhook_ttl_s=3600, authentic=True)
    try:
        with pytest.raises(DeliveryFailed, match="only to the conversation of its question"):
            await c.send(OutboundText("bot", "cidSomeOtherGroup==", "answer", 1, 1, "m1:1", question))
    finally:
        await c.aclose()
    assert platform.calls == []


@pytest.mark.anyio
async def test_notifications_go_to_the_configured_chat(platform: PlatformStandIn) -> None:
    """No question, so no sessionWebhook: a notification or routed copy goes to the chat the operator configured."""
    c = _connector(platform)
    try:
        await c.send(OutboundText("bot", "cidOpsGroup==", "disk almost full", 1, 1, "alert-1:1"))
    finally:
        await c.aclose()
    [sent] = platform.sends()
    assert sent.path == "/v1.0/robot/groupMessages/send" and sent.body["openConversationId"] == "cidOpsGroup=="


def test_http_callback_without_session_webhook_is_refused(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(DINGTALK.options(platform.base))
    body = p.dingtalk_message("msg-nohook")
    del body["sessionWebhook"]
    resp = app.send(p.dingtalk_request(body))
    assert resp.status_code == 400
    assert resp.json()["detail"].startswith("sessionWebhook: required field is missing")
    assert app.jobs() == []


def _stream_options(platform: PlatformStandIn) -> dict[str, object]:
    options = {**DINGTALK.options(platform.base), "mode": "stream"}
    del options["webhook_url"]
    return options


def test_stream_mode_acks_every_frame_and_queues_one_job(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_stream_options(platform))
    wait_until(lambda: platform.frames_out is not None and app.connector.stream_connected.is_set(), 20, "stream")
    [opened] = [c for c in platform.calls if c.path == "/v1.0/gateway/connections/open"]
    assert opened.body["clientId"] == p.DT_APP_KEY
    assert opened.body["subscriptions"] == [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
    assert app.client.get("/readyz").json()["checks"]["stream:bot"] == "ok"
    assert app.metric("ai_assistant_stream_up", connector="bot") == 1
    body = p.dingtalk_message("msg-s1", session_webhook=f"{platform.base}/robot/sendBySession?session=s")
    for i in range(3):  # the gateway re-delivers a frame it thinks was not acknowledged
        platform.push_frame(p.dingtalk_frame(body, f"frame-{i}"))
    platform.push_frame(p.dingtalk_frame(p.dingtalk_message("msg-s2", robot_code="dingotherrobot"), "frame-x"))
    wait_until(lambda: len(platform.acks) == 4, 20, "four acks")
    assert [a["code"] for a in platform.acks] == [200, 200, 200, 200]
    assert [a["headers"]["messageId"] for a in platform.acks] == ["frame-0", "frame-1", "frame-2", "frame-x"]
    assert [m["event_id"] for m in app.messages()] == ["msg-s1"]
    # The gateway's SYSTEM frames: a ping is acknowledged, a disconnect makes the connector open a new connection.
    platform.push_frame(_system_frame("ping", "sys-1"))
    wait_until(lambda: len(platform.acks) == 5, 20, "the ping's ack")
    assert platform.acks[-1]["code"] == 200 and platform.acks[-1]["headers"]["messageId"] == "sys-1"
    connections = platform.stream_connections
    platform.push_frame(_system_frame("disconnect", "sys-2"))
    wait_until(lambda: platform.stream_connections == connections + 1, 20, "a new stream connection")
    assert len([c for c in platform.calls if c.path == "/v1.0/gateway/connections/open"]) == 2


def test_stream_mode_reports_a_gateway_that_refuses_the_credentials(
    make_app: AppFactory, platform: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused twice, so that the state stays down over a back-off or two while the test looks (the first retry
    # comes after 1 s, which a loaded machine can spend between two reads).
    platform.script(
        "/gateway/connections/open", 401, {"code": "InvalidAuthentication", "message": "bad secret"}, times=2
    )
    with caplog.at_level(logging.WARNING):
        app = make_app(_stream_options(platform))
        wait_until(
            lambda: (
                app.client.get("/readyz").json()["checks"]["stream:bot"] == "down: unauthorized"
                and app.metric("ai_assistant_stream_up", connector="bot") == 0
            ),
            30,
            "down in /readyz and in the stream_up metric",
        )
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="unauthorized") >= 1
    assert "HTTP 401: app_key / app_secret are wrong or were reset" in caplog.text
    wait_until(lambda: app.connector.stream_connected.is_set(), 30, "the retry to connect")  # back-off: 1 s
    assert app.client.get("/readyz").json()["checks"]["stream:bot"] == "ok"


def _system_frame(topic: str, frame_id: str) -> dict[str, object]:
    return {
        "specVersion": "1.0",
        "type": "SYSTEM",
        "headers": {"contentType": "application/json", "messageId": frame_id, "topic": topic, "time": "1700000000000"},
        "data": json.dumps({"opaque": "x"}),
    }


def test_stream_mode_answers_once_with_the_real_model(
    make_app: AppFactory, platform: PlatformStandIn, model_server: str
) -> None:
    app = make_app(_stream_options(platform), engine_url=model_server, workers=True)
    wait_until(lambda: platform.frames_out is not None and app.connector.stream_connected.is_set(), 20, "stream")
    body = p.dingtalk_message("msg-s3", session_webhook=f"{platform.base}/robot/sendBySession?session=s3")
    for i in range(3):
        platform.push_frame(p.dingtalk_frame(body, f"frame-{i}"))
    wait_until(lambda: app.jobs() and app.jobs()[0][1] == "done", 240, "the answer")
    [sent] = platform.sends()
    assert sent.query == {"session": "s3"} and sent.text().strip()
