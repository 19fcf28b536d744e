"""Feishu/Lark long connection (`mode: stream`) against the stand-in's endpoint discovery and WebSocket, whose frames
are built with lark-oapi's own protobuf `Frame` class (Feishu cannot be reached here): the real app on loopback with a
real SQLite store. An event is answered with 200 only once queued; one whose answer was lost with the connection is
pushed again on the next one and queued once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.connectors import producers as p
from tests.connectors.cases import FEISHU
from tests.connectors.conftest import AppFactory, RunningApp
from tests.connectors.standin import PlatformStandIn
from tests.helpers import wait_until


def _options(platform: PlatformStandIn) -> dict[str, Any]:
    options = {**FEISHU.options(platform.base), "mode": "stream"}
    del options["webhook_url"], options["verification_token"], options["encrypt_key"]  # nothing calls us
    return options


def _state(app: RunningApp) -> str:
    return str(app.client.get("/readyz").json()["checks"]["stream:bot"])


def _ids(app: RunningApp) -> list[str]:
    return [event for event, _, _ in app.jobs()]


def _connected(app: RunningApp, platform: PlatformStandIn, connections: int = 1) -> None:
    wait_until(lambda: _state(app) == "ok" and platform.feishu_connections == connections, 30, "a long connection")


def test_events_are_answered_only_once_queued_and_queued_once(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    [discovery] = [c for c in platform.calls if c.path == "/callback/ws/endpoint"]
    assert discovery.body == {"AppID": p.FEISHU_APP_ID, "AppSecret": p.FEISHU_APP_SECRET}
    queued_when_answered: dict[str, list[str]] = {}
    platform.on_feishu_answer = lambda frame, code: queued_when_answered.setdefault(frame, _ids(app))
    first = platform.push_feishu_event(p.feishu_message("ev-1", "om_1"))
    again = platform.push_feishu_event(p.feishu_message("ev-1-again", "om_1"))  # the same message, a new event_id
    split = platform.push_feishu_event(p.feishu_message("ev-2", "om_2", "a question in three frames"), parts=3)
    wait_until(lambda: not platform.feishu_events, 30, "every event to be answered")
    assert _ids(app) == ["ev-1", "ev-2"]
    assert sorted(platform.feishu_answers) == sorted([(first, 200), (again, 200), (split, 200)])
    assert "ev-1" in queued_when_answered[first] and "ev-2" in queued_when_answered[split]
    assert [m["text"] for m in app.messages()][1] == "a question in three frames"
    wait_until(lambda: platform.feishu_pings >= 2, 30, "pings at the interval the endpoint gave")
    assert app.metric("ai_assistant_stream_up", connector="bot") == 1


def test_an_answer_lost_with_the_connection_is_pushed_again_and_queued_once(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    duplicates = app.metric("ai_assistant_duplicates_total", connector="bot")
    # The answer never reaches Feishu: the connection drops right behind the event.
    platform.feishu_drop_after_next_event = True
    frame = platform.push_feishu_event(p.feishu_message("ev-3", "om_3"))
    wait_until(lambda: _ids(app) == ["ev-3"], 30, "the job")
    _connected(app, platform, connections=2)
    wait_until(lambda: not platform.feishu_events, 30, "the event to be answered on the new connection")
    assert app.jobs() == [("ev-3", "queued", 0)]
    assert platform.feishu_answers == [(frame, 200)]
    assert app.metric("ai_assistant_duplicates_total", connector="bot") == duplicates + 1


def test_a_malformed_frame_and_event_are_counted_and_skipped(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_options(platform))
    _connected(app, platform)
    before = app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed")
    platform.push_feishu_frame(b"\xff\xff not protobuf")
    header = {"app_id": p.FEISHU_APP_ID, "event_type": "im.message.receive_v1", "event_id": "ev-x"}
    broken = platform.push_feishu_event({"schema": "2.0", "header": header, "event": {"message": "not an object"}})
    platform.push_feishu_event(p.feishu_message("ev-4", "om_4"))
    wait_until(lambda: not platform.feishu_events and _ids(app) == ["ev-4"], 30, "the good event")
    assert (broken, 200) in platform.feishu_answers  # answered: a retry cannot fix it
    wait_until(
        lambda: app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed") == before + 2,
        30,
        "both malformed inputs to be counted",
    )
    assert _state(app) == "ok"


def test_a_reset_app_secret_is_reported(
    make_app: AppFactory, platform: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    platform.feishu_secrets.clear()
    with caplog.at_level(logging.WARNING):
        app = make_app(_options(platform))
        wait_until(lambda: _state(app) == "down: unauthorized", 30, "the refusal to be reported")
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="unauthorized") >= 1
    assert "code 10014 app secret invalid: app_id / app_secret are wrong" in caplog.text
    assert p.FEISHU_APP_SECRET not in caplog.text
    platform.feishu_secrets.add(p.FEISHU_APP_SECRET)
    _connected(app, platform)
