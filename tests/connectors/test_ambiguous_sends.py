"""A send that may have reached the platform is never posted twice (docs/adr/0003-exactly-once-answers.md, "Sends that
may have been posted").

Each platform's connector sends a two-part answer to the loopback stand-in of its API (the platforms themselves
cannot be reached from here), which fails the first part in one way: it posts it and then stalls past the client's
timeout, answers 503, answers 429 with Retry-After, answers 504, or hangs without posting. `deliver()` then does with
each part what the worker's contract says (pipeline/worker.py): DeliveryUncertain -> the part counts as sent,
unconfirmed; DeliveryFailed -> the part is sent again later, no sooner than its retry_after. The stand-in's
`copies()` is what users see, a re-sent Feishu `uuid` or generic-IM `webhook-id` dropped as the platform drops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from ai_assistant.channels.connector import ConnectorChannel, ConnectorChannelConfig
from ai_assistant.channels.loader import RoutedChannel
from ai_assistant.channels.notify import Notifier
from ai_assistant.channels.webhook import WebhookChannel, WebhookChannelConfig
from ai_assistant.connectors.base import Connector
from ai_assistant.connectors.dingtalk import DingTalkConfig, DingTalkConnector
from ai_assistant.connectors.feishu import FeishuConfig, FeishuConnector
from ai_assistant.connectors.generic_im import GenericIMConfig, GenericIMConnector
from ai_assistant.connectors.outbound import OutboundOptions, PlatformAPI
from ai_assistant.connectors.slack import SlackConfig, SlackConnector
from ai_assistant.connectors.telegram import TelegramConfig, TelegramConnector
from ai_assistant.connectors.wecom import WeComConfig, WeComConnector
from ai_assistant.errors import DeliveryFailed, DeliveryUncertain
from ai_assistant.messages import InboundMessage, OutboundText
from ai_assistant.store.sqlite import SQLiteStore
from tests.connectors.cases import BY_NAME, CASES, Case
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn
from tests.helpers import SECRET, wait_until

TIMEOUT = 3.0  # the connectors' http_timeout_seconds here: generous for loopback on a loaded machine
FAST = {"http_timeout_seconds": TIMEOUT, "retry_backoff_seconds": 0.05, "chat_rate_limit_per_second": 100.0}


@dataclass
class Target:
    connector: Connector
    send_path: str  # the suffix of the send call's path, for the stand-in's scripts
    question: InboundMessage
    keyed: bool  # the platform drops a second copy that carries the same idempotency key

    def part(self, n: int, text: str) -> OutboundText:
        q = self.question
        return OutboundText(q.connector, q.chat_id, text, n, 2, f"{q.event_id}:{n}", in_reply_to=q)


def _question(chat: str, **reply_context: Any) -> InboundMessage:
    return InboundMessage(
        connector="bot", event_id="ev-1", chat_id=chat, user_id="u1", text="question?", reply_context=reply_context
    )


def _target(name: str, base: str) -> Target:
    if name == "generic_im":
        options = {"platform": "generic_im", "app_secret": SECRET, "reply_url": f"{base}/generic/replies", **FAST}
        return Target(
            GenericIMConnector("bot", GenericIMConfig.model_validate(options)),
            "/generic/replies",
            _question("chat-1"),
            keyed=True,
        )
    options = {**BY_NAME[name].options(base), **FAST}
    if name == "feishu":
        connector: Connector = FeishuConnector("bot", FeishuConfig.model_validate(options))
        return Target(connector, "/reply", _question("oc_1", message_id="om_q1"), keyed=True)
    if name == "slack":
        connector = SlackConnector("bot", SlackConfig.model_validate(options))
        return Target(connector, "/chat.postMessage", _question("C1"), keyed=False)
    if name == "telegram":
        connector = TelegramConnector("bot", TelegramConfig.model_validate(options))
        return Target(connector, "/sendMessage", _question("777", message_id=5), keyed=False)
    if name == "wecom":
        connector = WeComConnector("bot", WeComConfig.model_validate(options))
        return Target(connector, "/cgi-bin/message/send", _question("zhangsan"), keyed=False)
    assert name == "dingtalk"
    connector = DingTalkConnector("bot", DingTalkConfig.model_validate(options))
    question = _question(
        "cidSingle001==",
        session_webhook=f"{base}/robot/sendBySession?session=s1",
        session_webhook_expires_ms=int((time.time() + 3600) * 1000),
        conversation_type="1",
        staff_id="staff001",
    )
    return Target(connector, "/robot/sendBySession", question, keyed=False)


PLATFORMS = ["feishu", "slack", "telegram", "wecom", "dingtalk", "generic_im"]


@pytest.fixture(params=PLATFORMS)
def target(request: pytest.FixtureRequest, platform: PlatformStandIn) -> Iterator[Target]:
    t = _target(request.param, platform.base)
    yield t  # deliver() closes the connector, in the test's own event loop
    platform.release()


async def deliver(target: Target, parts: list[OutboundText]) -> list[str]:
    """Each part as the worker handles it: re-sent after DeliveryFailed (up to 5 tries, after retry_after when
    the platform gave one), never after DeliveryUncertain."""
    outcomes = []
    try:
        for part in parts:
            for _ in range(5):
                try:
                    await target.connector.send(part)
                except DeliveryUncertain:
                    outcomes.append("unconfirmed")
                    break
                except DeliveryFailed as exc:
                    await asyncio.sleep(exc.retry_after or 0.05)
                    continue
                outcomes.append("sent")
                break
            else:
                outcomes.append("failed")
    finally:
        await target.connector.aclose()
    return outcomes


def ambiguous(handling: str, connector: str = "bot") -> float:
    labels = {"connector": connector, "handling": handling}
    return REGISTRY.get_sample_value("ai_assistant_ambiguous_sends_total", labels) or 0.0


def texts(calls: list[Any]) -> list[str]:
    return [c.text() for c in calls]


def _requests_for(platform: PlatformStandIn, target: Target, text: str) -> list[Any]:
    return [c for c in platform.sends() if c.path.endswith(target.send_path) and c.text() == text]


@pytest.mark.anyio
async def test_posted_then_too_slow_to_answer(target: Target, platform: PlatformStandIn) -> None:
    """The platform posts part 1 and answers only after the client gave up: exactly one copy on every platform."""
    platform.stall(target.send_path, posted=True)
    before = ambiguous("resent"), ambiguous("not_resent")
    outcomes = await deliver(target, [target.part(1, "part one"), target.part(2, "part two")])
    assert texts(platform.copies()) == ["part one", "part two"]
    tries = len(_requests_for(platform, target, "part one"))
    if target.keyed:  # sent again with the same key, which the platform drops
        assert outcomes == ["sent", "sent"] and tries == 2
        assert (ambiguous("resent"), ambiguous("not_resent")) == (before[0] + 1, before[1])
    else:  # not sent again: one request, reported as unconfirmed
        assert outcomes == ["unconfirmed", "sent"] and tries == 1
        assert (ambiguous("resent"), ambiguous("not_resent")) == (before[0], before[1] + 1)


@pytest.mark.anyio
async def test_hangs_without_posting(target: Target, platform: PlatformStandIn) -> None:
    """Indistinguishable from the case above for the client. Keyed platforms still get exactly one copy; the others
    get at most one (here none): sending again blindly would duplicate every part that was in fact posted."""
    platform.stall(target.send_path, posted=False)
    outcomes = await deliver(target, [target.part(1, "part one"), target.part(2, "part two")])
    tries = len(_requests_for(platform, target, "part one"))
    if target.keyed:
        assert outcomes == ["sent", "sent"] and tries == 2
        assert texts(platform.copies()) == ["part one", "part two"]
    else:
        assert outcomes == ["unconfirmed", "sent"] and tries == 1
        assert texts(platform.copies()) == ["part two"]


@pytest.mark.anyio
async def test_gateway_timeout_is_ambiguous_too(target: Target, platform: PlatformStandIn) -> None:
    platform.script(target.send_path, 504, {"error": "upstream timed out"})
    outcomes = await deliver(target, [target.part(1, "part one"), target.part(2, "part two")])
    tries = len(_requests_for(platform, target, "part one"))
    assert outcomes == (["sent", "sent"] if target.keyed else ["unconfirmed", "sent"])
    assert tries == (2 if target.keyed else 1)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_retried_and_posted_once(target: Target, platform: PlatformStandIn, status: int) -> None:
    """A 5xx other than 504 is the platform refusing the request: retried, one copy. Three of them use up the
    connector's own tries (max_attempts 3), so the fourth request comes from the worker's retry: still one copy."""
    platform.script(target.send_path, status, {"ok": False, "error": "busy"}, times=3)
    outcomes = await deliver(target, [target.part(1, "part one"), target.part(2, "part two")])
    assert outcomes == ["sent", "sent"]
    assert len(_requests_for(platform, target, "part one")) == 4
    assert texts(platform.copies()) == ["part one", "part two"]


@pytest.mark.anyio
async def test_429_waits_as_long_as_the_platform_asks(target: Target, platform: PlatformStandIn) -> None:
    body: dict[str, Any] = {"ok": False, "error": "ratelimited"}
    if target.send_path == "/sendMessage":  # Telegram says it in the body, not in a header
        body = {"ok": False, "error_code": 429, "parameters": {"retry_after": 1}}
    platform.script(target.send_path, 429, body, headers={"Retry-After": "1"})
    outcomes = await deliver(target, [target.part(1, "part one"), target.part(2, "part two")])
    assert outcomes == ["sent", "sent"]
    first, second = _requests_for(platform, target, "part one")
    assert second.at - first.at >= 0.99  # never sooner than asked (a lower bound only: no speed is assumed)
    assert texts(platform.copies()) == ["part one", "part two"]


@pytest.mark.anyio
async def test_a_long_retry_after_goes_to_the_worker(platform: PlatformStandIn) -> None:
    """Retry-After beyond what one send may wait (30 s), here as an HTTP-date: no early retry, the wait is handed on."""
    client = httpx.AsyncClient()
    api = PlatformAPI("bot", OutboundOptions(), lambda: client)
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    platform.script("/robot/sendBySession", 503, {"errcode": -1}, headers={"Retry-After": later})
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await api.call("POST", f"{platform.base}/robot/sendBySession", endpoint="x")
    finally:
        await client.aclose()
    assert not isinstance(caught.value, DeliveryUncertain)
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120
    assert len(platform.calls) == 1


@pytest.mark.anyio
async def test_nothing_listening_is_retried_because_nothing_was_sent(platform: PlatformStandIn) -> None:
    """A refused connection proves the message was not posted: the connector tries again and the worker may too."""
    dead = _target("telegram", "http://127.0.0.1:9")  # the discard port: nothing listens on loopback there
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await dead.connector.send(dead.part(1, "part one"))
    finally:
        await dead.connector.aclose()
    assert not isinstance(caught.value, DeliveryUncertain)
    assert "after 3 attempts" in str(caught.value)


@pytest.mark.anyio
async def test_routed_pieces_are_checkpointed_like_parts(platform: PlatformStandIn) -> None:
    """A copy routed to another platform that needs it in two pieces becomes two plan entries: when piece 2 fails,
    only piece 2 is sent again."""
    telegram = _target("telegram", platform.base).connector
    channel = ConnectorChannel(
        "audit", ConnectorChannelConfig(connector="tg", chat_id="-100200", prefix="[audit] "), {"tg": telegram}
    )
    routed = RoutedChannel(channel, frozenset({"*"}))
    answer = "a" * 4000 + "\n\n" + "b" * 3000  # over Telegram's 4,096 units: two pieces
    plan = routed.deliveries(OutboundText("feishu-main", "oc_1", answer, 1, 1, "ev-9:audit"))
    assert [(c, p.idempotency_key) for c, p in plan] == [
        (channel, "audit:ev-9:audit.1"),
        (channel, "audit:ev-9:audit.2"),
    ]
    sent: list[int] = []
    try:
        for index, (ch, piece) in enumerate(plan):
            if index == 1:  # all three tries of the first delivery of piece 2 are refused
                platform.script("/sendMessage", 503, {"ok": False}, times=3)
            for _ in range(5):  # the worker: retry the entry that failed, never the ones before it
                try:
                    await ch.deliver(piece)
                except DeliveryFailed:
                    continue
                sent.append(index)
                break
    finally:
        await telegram.aclose()
    copies = platform.copies()
    assert [c.text()[:9] for c in copies] == ["[audit] a", "b" * 9]
    assert len(platform.sends()) == 1 + 4  # piece 1 once; piece 2 refused three times, then posted
    assert sent == [0, 1]
    assert [c.body["chat_id"] for c in copies] == ["-100200", "-100200"]


SEND_PATH = {
    "feishu": "/reply",
    "slack": "/chat.postMessage",
    "wecom": "/cgi-bin/message/send",
    "dingtalk": "/robot/sendBySession",
    "telegram": "/sendMessage",
}


@pytest.mark.model
@pytest.mark.parametrize("case", [pytest.param(c, id=c.platform) for c in CASES])
def test_slow_platform_gets_one_copy_of_the_real_answer(
    case: Case, make_app: AppFactory, platform: PlatformStandIn, model_server: str
) -> None:
    """The whole service: the real app, worker and SQLite store, the real model; the stand-in posts the answer's
    first part and answers only after the connector's timeout."""
    # One-shot sends are the subject here; a progressive reply's first post is covered in tests/conversation.
    options = {**case.options(platform.base), **FAST, "progressive_replies": False}
    app = make_app(options, engine_url=model_server, workers=True)
    platform.stall(SEND_PATH[case.platform], posted=True)
    assert app.send(case.genuine(7, platform.base)).status_code == 200
    wait_until(lambda: app.jobs() and all(state != "queued" for _, state, _ in app.jobs()), 240, "the answer")
    platform.release()
    time.sleep(1)  # a second copy, if the worker were to send one, would be on its way by now
    assert [state for _, state, _ in app.jobs()] == ["done"]
    [copy] = platform.copies()
    assert copy.text().strip() and copy.text() != app.settings.engine.error_reply, "the model did not answer"


@pytest.mark.anyio
async def test_webhook_channel_resends_with_the_same_id_and_hands_on_retry_after(platform: PlatformStandIn) -> None:
    """The webhook output channel: a receiver that stalled after taking the part gets it again under the same
    webhook-id (one copy kept); a 503's Retry-After travels to the worker."""
    config = WebhookChannelConfig(url=f"{platform.base}/generic/replies", secret=SECRET, timeout_seconds=TIMEOUT)
    channel = WebhookChannel("audit", config)
    part = OutboundText("bot", "chat-1", "part one", 1, 1, "ev-3:audit")
    resent = ambiguous("resent", "audit")
    try:
        platform.stall("/generic/replies", posted=True)
        with pytest.raises(DeliveryFailed) as timed_out:
            await channel.deliver(part)
        platform.release()
        await channel.deliver(part)
        platform.script("/generic/replies", 503, {"error": "busy"}, headers={"Retry-After": "7"})
        with pytest.raises(DeliveryFailed) as busy:
            await channel.deliver(part)
    finally:
        await channel.aclose()
    assert not isinstance(timed_out.value, DeliveryUncertain)
    assert busy.value.retry_after == 7.0
    assert texts(platform.copies()) == ["part one"] and len(platform.sends()) == 3
    assert ambiguous("resent", "audit") == resent + 1


@pytest.mark.anyio
async def test_a_notification_that_may_have_been_posted_is_not_posted_again(
    platform: PlatformStandIn, tmp_path: Path
) -> None:
    """Alertmanager repeats a notification until it is acknowledged: after an unconfirmed send the key stays
    remembered (real SQLite store), so the repeat does not post it a second time; after a refusal it is forgotten."""
    telegram = _target("telegram", platform.base).connector
    store = SQLiteStore(tmp_path / "state.sqlite3")
    notify = Notifier({"tg": telegram}, store)
    try:
        platform.stall("/sendMessage", posted=True)
        with pytest.raises(DeliveryUncertain):
            await notify("tg", "-100300", "disk almost full", "alert-1")
        platform.release()
        await notify("tg", "-100300", "disk almost full", "alert-1")  # Alertmanager's repeat
        platform.script("/sendMessage", 400, {"ok": False, "description": "Bad Request: chat not found"})
        with pytest.raises(DeliveryFailed):
            await notify("tg", "-100300", "backup failed", "alert-2")
        await notify("tg", "-100300", "backup failed", "alert-2")
    finally:
        await telegram.aclose()
        await store.close()
    assert texts(platform.copies()) == ["disk almost full", "backup failed"]
    assert len(platform.sends()) == 3
