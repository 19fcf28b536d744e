"""Telegram specifics: group etiquette with @username or a reply to the bot, getMe when the username is not
configured, and sendMessage as a reply, with 429 retry_after honoured."""

from __future__ import annotations

import pytest

from ai_assistant.connectors.telegram import TelegramConfig, TelegramConnector
from ai_assistant.errors import ConfigError, DeliveryFailed
from ai_assistant.messages import OutboundText
from tests.connectors import producers as p
from tests.connectors.cases import TELEGRAM
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn


def test_group_needs_a_mention_or_a_reply_to_the_bot(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(TELEGRAM.options(platform.base))
    assert (
        app.send(p.telegram_request(p.telegram_update(20_001, "chatting", message_id=1, group=True))).status_code == 200
    )
    assert app.jobs() == []
    asked = p.telegram_update(20_002, "Where is the VPN guide?", message_id=2, group=True, mention=True)
    assert app.send(p.telegram_request(asked)).status_code == 200
    reply = p.telegram_update(20_003, "and the Wi-Fi?", message_id=3, group=True)
    reply["message"]["reply_to_message"] = {
        "message_id": 99,
        "date": 1700000000,
        "chat": reply["message"]["chat"],
        "from": {"id": 42, "is_bot": True, "first_name": "Assistant", "username": "assistant_bot"},
        "text": "...",
    }
    assert app.send(p.telegram_request(reply)).status_code == 200
    texts = [(m["text"], m["is_group"], m["reply_context"]) for m in app.messages()]
    assert texts == [("Where is the VPN guide?", True, {"message_id": 2}), ("and the Wi-Fi?", True, {"message_id": 3})]


def test_edits_and_bots_are_acknowledged_not_answered(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(TELEGRAM.options(platform.base))
    edit = p.telegram_update(20_010, message_id=10)
    edit["edited_message"] = edit.pop("message")
    bot = p.telegram_update(20_011, message_id=11)
    bot["message"]["from"]["is_bot"] = True
    for update in (edit, bot):
        assert app.send(p.telegram_request(update)).status_code == 200
    assert app.send(p.telegram_request({"message": {}})).status_code == 400  # no update_id
    assert app.jobs() == []


@pytest.mark.anyio
async def test_get_me_then_reply_with_retry_after(platform: PlatformStandIn) -> None:
    options = {k: v for k, v in TELEGRAM.options(platform.base).items() if k != "bot_username"}
    c = TelegramConnector("bot", TelegramConfig.model_validate(options))
    platform.script(
        "/sendMessage",
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 0",
            "parameters": {"retry_after": 0},
        },
    )
    try:
        await c.start()
        assert c.username == "assistant_bot"
        verdict_text = p.telegram_update(20_020, "hi", message_id=20, group=True, mention=True)
        from ai_assistant.messages import RawRequest

        req = p.telegram_request(verdict_text)
        verdict = await c.verify(
            RawRequest("POST", req.path, {k.lower(): v for k, v in req.headers.items()}, {}, req.body)
        )
        [question] = verdict.messages
        await c.send(OutboundText("bot", question.chat_id, "answer", 1, 1, "20020:1", question))
    finally:
        await c.aclose()
    assert [call.path for call in platform.calls] == [f"/bot{p.TG_BOT_TOKEN}/getMe"] + [
        f"/bot{p.TG_BOT_TOKEN}/sendMessage"
    ] * 2
    sent = platform.sends()[-1].body
    assert sent == {
        "chat_id": "-1001234",
        "text": "answer",
        "reply_parameters": {"message_id": 20, "allow_sending_without_reply": True},
    }


def test_secret_token_shape_is_checked_at_load(make_app: AppFactory, platform: PlatformStandIn) -> None:
    with pytest.raises(ConfigError, match=r"bot\.secret_token: must be 1-256 characters"):
        make_app({**TELEGRAM.options(platform.base), "secret_token": "has spaces and ü"})


@pytest.mark.anyio
async def test_failures_never_show_the_token_in_the_url(
    platform: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot token is part of every Bot API URL: our errors and logs name the method instead. (httpx's own request
    log line has the URL; the service keeps httpx at WARNING and scrubs every connector secret from log lines.)"""
    caplog.set_level("DEBUG", logger="ai_assistant")
    options = {**TELEGRAM.options(platform.base), "max_attempts": 2, "retry_backoff_seconds": 0}
    c = TelegramConnector("bot", TelegramConfig.model_validate(options))
    platform.script("/sendMessage", 502, {"ok": False, "description": "Bad Gateway"}, times=2)
    try:
        with pytest.raises(DeliveryFailed) as err:
            await c.send(OutboundText("bot", "777", "answer", 1, 1, "1:1", None))
        await c.aclose()
        dead = TelegramConnector("bot", TelegramConfig.model_validate({**options, "api_base": "http://127.0.0.1:9"}))
        with pytest.raises(DeliveryFailed) as unreachable:
            await dead.send(OutboundText("bot", "777", "answer", 1, 1, "1:1", None))
        await dead.aclose()
    finally:
        await c.aclose()
    assert str(err.value) == "bot: sendMessage: HTTP 502 (after 2 attempts)"
    assert str(unreachable.value) == "bot: sendMessage: ConnectError (after 2 attempts)"
    assert "try 2 of 2" in caplog.text  # the retry was logged ...
    assert p.TG_BOT_TOKEN.split(":")[1] not in caplog.text  # ... without the token
