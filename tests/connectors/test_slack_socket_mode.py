"""Slack Socket Mode (`mode: stream`) through slack_sdk's own Socket Mode client, against the stand-in's
apps.connections.open and WebSocket speaking Socket Mode's published frames (Slack cannot be reached here): the real
app on loopback with a real SQLite store. Envelopes are acknowledged only once their event is in the store; one whose
acknowledgement was lost with the connection comes again on the next one and is queued once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.connectors import producers as p
from tests.connectors.cases import SLACK
from tests.connectors.conftest import AppFactory, RunningApp
from tests.connectors.standin import PlatformStandIn
from tests.helpers import wait_until


def _options(platform: PlatformStandIn) -> dict[str, Any]:
    options = {**SLACK.options(platform.base), "mode": "stream", "app_token": p.SLACK_APP_TOKEN}
    del options["webhook_url"], options["signing_secret"]  # no public URL, nothing calls us
    return options


def _state(app: RunningApp) -> str:
    return str(app.client.get("/readyz").json()["checks"]["stream:bot"])


def _ids(app: RunningApp) -> list[str]:
    return [event for event, _, _ in app.jobs()]


def _connected(app: RunningApp, platform: PlatformStandIn, connections: int = 1) -> None:
    wait_until(lambda: _state(app) == "ok" and platform.slack_connections == connections, 30, "a Socket Mode session")


def test_events_are_acknowledged_only_once_queued_and_queued_once(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    assert app.metric("ai_assistant_stream_up", connector="bot") == 1
    [opened] = [c for c in platform.calls if c.path == "/api/apps.connections.open"]
    assert opened.headers["authorization"] == f"Bearer {p.SLACK_APP_TOKEN}"
    queued_when_acked: dict[str, list[str]] = {}
    platform.on_envelope_ack = lambda envelope: queued_when_acked.setdefault(envelope, _ids(app))
    first = platform.push_envelope(p.slack_event("Ev1", ts="1700000001.000100"))
    # The same message as an app_mention (Slack sends both for a mention in a channel): one job.
    mention = p.slack_event("Ev2", ts="1700000002.000100", channel="C0CHAN001", kind="mention")
    plain = {**mention, "event_id": "Ev3", "event": {**mention["event"], "type": "message", "channel_type": "channel"}}
    second, third = platform.push_envelope(mention), platform.push_envelope(plain)
    wait_until(lambda: not platform.envelopes, 30, "every envelope to be acknowledged")
    assert _ids(app) == ["Ev1", "Ev2"]
    assert sorted(platform.envelope_acks) == sorted([first, second, third])
    assert "Ev1" in queued_when_acked[first] and "Ev2" in queued_when_acked[second]


def test_a_reaction_over_the_socket_counts_as_feedback_once(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    before = app.metric("ai_assistant_feedback_total", connector="bot", rating="positive")
    reaction = {
        **p.slack_event("Ev9"),
        "event": {
            "type": "reaction_added",
            "user": "U0USER001",
            "reaction": "+1",
            "item_user": p.SLACK_BOT_USER,
            "item": {"type": "message", "channel": "C0CHAN001", "ts": "1700000009.000100"},
        },
    }
    platform.push_envelope(reaction)
    platform.push_envelope({**reaction, "event_id": "Ev10"})  # removed and added again: the same rating
    wait_until(lambda: not platform.envelopes, 30, "both envelopes to be acknowledged")
    assert app.metric("ai_assistant_feedback_total", connector="bot", rating="positive") == before + 1
    assert _ids(app) == []


def test_an_ack_lost_with_the_connection_is_redelivered_and_queued_once(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    duplicates = app.metric("ai_assistant_duplicates_total", connector="bot")
    platform.drop_after_next_envelope = True
    envelope = platform.push_envelope(p.slack_event("Ev20", ts="1700000020.000100"))
    wait_until(lambda: _ids(app) == ["Ev20"], 30, "the job")
    _connected(app, platform, connections=2)  # the client reconnects with back-off and Slack sends it again
    wait_until(lambda: not platform.envelopes, 30, "the redelivered envelope to be acknowledged")
    assert platform.envelope_acks == [envelope]
    assert app.jobs() == [("Ev20", "queued", 0)]
    assert app.metric("ai_assistant_duplicates_total", connector="bot") == duplicates + 1
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="disconnected") >= 1


def test_a_disconnect_frame_moves_to_a_new_connection(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    platform.push_slack_frame({"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "x"}})
    wait_until(lambda: platform.slack_connections == 2, 30, "a new connection")
    assert len([c for c in platform.calls if c.path == "/api/apps.connections.open"]) == 2
    platform.push_envelope(p.slack_event("Ev30", ts="1700000030.000100"))
    wait_until(lambda: _ids(app) == ["Ev30"] and not platform.envelopes, 30, "the job on the new connection")


def test_a_malformed_envelope_is_counted_acknowledged_and_skipped(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    before = app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed")
    broken = {**p.slack_event("Ev40"), "event": {"type": "message", "user": "U0USER001", "text": 7}}
    platform.push_envelope(broken)
    platform.push_slack_frame({"no": "type"})
    platform.push_envelope(p.slack_event("Ev41", ts="1700000041.000100"))
    wait_until(lambda: not platform.envelopes and _ids(app) == ["Ev41"], 30, "the good envelope")
    wait_until(
        lambda: app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed") == before + 2,
        30,
        "both malformed frames to be counted",
    )
    assert _state(app) == "ok"


def test_a_revoked_app_token_is_reported(
    make_app: AppFactory, platform: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    platform.app_tokens.clear()
    with caplog.at_level(logging.WARNING):
        app = make_app(_options(platform))
        wait_until(lambda: _state(app) == "down: unauthorized", 30, "the refusal to be reported")
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="unauthorized") >= 1
    lines = [r.getMessage() for r in caplog.records]
    assert any("invalid_auth: app_token is wrong or was revoked" in line for line in lines), lines
    assert p.SLACK_APP_TOKEN not in caplog.text
    platform.app_tokens.add(p.SLACK_APP_TOKEN)
    _connected(app, platform)


def test_stream_mode_needs_an_app_token(tmp_path: Any) -> None:
    from pydantic import ValidationError

    from ai_assistant.connectors.slack import SlackConfig

    with pytest.raises(ValidationError, match="app_token: required with mode: stream"):
        SlackConfig.model_validate({"platform": "slack", "mode": "stream", "bot_token": p.SLACK_BOT_TOKEN})
    with pytest.raises(ValidationError, match="signing_secret: required with mode: webhook"):
        SlackConfig.model_validate({"platform": "slack", "bot_token": p.SLACK_BOT_TOKEN})
