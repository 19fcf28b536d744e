"""Slack specifics: channel etiquette (app_mention, threads), the bot never answers itself, one job for a message seen
as both `message` and `app_mention`, and chat.postMessage with Retry-After honoured."""

from __future__ import annotations

from typing import Any

import pytest

from ai_assistant.connectors.slack import SlackConfig, SlackConnector
from ai_assistant.messages import InboundMessage, OutboundText
from tests.connectors import producers as p
from tests.connectors.cases import SLACK
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn


def test_channel_messages_need_a_mention(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(SLACK.options(platform.base))
    chatter = p.slack_event("EvC1", "lunch anyone?", channel="C0CHAN001", ts="1700000100.000100", kind="channel")
    assert app.send(p.slack_request(chatter)).status_code == 200
    assert app.jobs() == []
    mention = p.slack_event(
        "EvC2", "Where is the VPN guide?", channel="C0CHAN001", ts="1700000200.000100", kind="mention"
    )
    assert app.send(p.slack_request(mention)).status_code == 200
    # Slack also delivers the same message as a channel `message` event when both are subscribed.
    same_as_message = p.slack_event(
        "EvC3",
        f"<@{p.SLACK_BOT_USER}> Where is the VPN guide?",
        channel="C0CHAN001",
        ts="1700000200.000100",
        kind="channel",
    )
    assert app.send(p.slack_request(same_as_message)).status_code == 200
    [msg] = app.messages()
    assert msg["text"] == "Where is the VPN guide?"
    assert msg["is_group"] and msg["mentioned"]
    assert msg["thread_id"] == "1700000200.000100"  # answer in the question's thread


def test_bot_posts_and_edits_are_never_answered(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(SLACK.options(platform.base))
    own = p.slack_event("EvB1", "my own answer")
    own["event"]["bot_id"] = "B0BOT0001"
    own_user = p.slack_event("EvB2", "also mine")
    own_user["event"]["user"] = p.SLACK_BOT_USER
    edit = p.slack_event("EvB3", "edited")
    edit["event"]["subtype"] = "message_changed"
    other_type = reaction("EvB4", "+1")  # an event that is not a message
    for payload in (own, own_user, edit, other_type):
        assert app.send(p.slack_request(payload)).status_code == 200
    assert app.jobs() == []


def test_malformed_signed_body_is_400(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(SLACK.options(platform.base))
    broken = p.slack_event("EvM1")
    del broken["event"]["channel"]
    resp = app.send(p.slack_request(broken))
    assert resp.status_code == 400
    assert resp.json() == {"error": "malformed", "detail": "event: user, channel, ts and text are required"}
    assert app.jobs() == []


@pytest.mark.anyio
async def test_post_message_in_thread_honouring_retry_after(platform: PlatformStandIn) -> None:
    platform.script("/chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "0"})
    c = SlackConnector("bot", SlackConfig.model_validate(SLACK.options(platform.base)))
    question = InboundMessage(
        connector="bot",
        event_id="Ev1",
        chat_id="C1",
        user_id="U1",
        text="q",
        is_group=True,
        thread_id="1700000000.000100",
    )
    try:
        await c.send(OutboundText("bot", "C1", "answer", 1, 1, "Ev1:1", question))
    finally:
        await c.aclose()
    first, second = platform.sends()
    assert second.body == {"channel": "C1", "text": "answer", "thread_ts": "1700000000.000100"}
    assert second.headers["authorization"] == f"Bearer {p.SLACK_BOT_TOKEN}"
    assert first.body == second.body


def reaction(event_id: str, name: str, *, on: str = p.SLACK_BOT_USER, user: str = "U0USER001") -> dict[str, Any]:
    payload = p.slack_event(event_id)
    payload["event"] = {
        "type": "reaction_added",
        "user": user,
        "reaction": name,
        "item_user": on,
        "item": {"type": "message", "channel": "D0DM0001", "ts": "1700000300.000100"},
        "event_ts": "1700000400.000100",
    }
    return payload


def test_thumbs_on_the_bots_answers_count_as_feedback_once_per_user_and_rating(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(SLACK.options(platform.base))

    def counted(rating: str) -> float:
        return app.metric("ai_assistant_feedback_total", connector=app.connector.name, rating=rating)

    before = {r: counted(r) for r in ("positive", "negative")}
    up = reaction("EvR1", "+1::skin-tone-3")
    assert app.send(p.slack_request(up)).status_code == 200
    assert app.send(p.slack_request(up, retry_num=1)).status_code == 200  # Slack's retry of the same event
    assert app.send(p.slack_request(reaction("EvR2", "thumbsup"))).status_code == 200  # removed, added again
    assert app.send(p.slack_request(reaction("EvR3", "-1", user="U0USER002"))).status_code == 200
    not_feedback = [
        reaction("EvR4", "tada"),  # not a rating
        reaction("EvR5", "+1", on="U0USER002"),  # somebody else's message
    ]
    for payload in not_feedback:
        assert app.send(p.slack_request(payload)).status_code == 200
    assert counted("positive") - before["positive"] == 1
    assert counted("negative") - before["negative"] == 1
    assert app.jobs() == []  # feedback is counted, never answered


@pytest.mark.parametrize(
    ("field", "detail"),
    [
        ("item", "event: item, user and reaction are required in reaction_added"),
        ("item.ts", "event.item: channel and ts are required"),
    ],
)
def test_a_reaction_without_what_it_rates_is_400(
    make_app: AppFactory, platform: PlatformStandIn, field: str, detail: str
) -> None:
    app = make_app(SLACK.options(platform.base))
    broken = reaction("EvR9", "+1")
    if field == "item":
        del broken["event"]["item"]
    else:
        del broken["event"]["item"]["ts"]
    resp = app.send(p.slack_request(broken))
    assert resp.status_code == 400
    assert resp.json() == {"error": "malformed", "detail": detail}
    assert app.jobs() == []
