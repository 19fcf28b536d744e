"""The same promises checked for every platform, through the real app over real HTTP on loopback with the real SQLite
store: genuine -> 2xx and queued once (answered once, with the real model); re-deliveries -> 2xx and nothing new;
forged or stale -> 401/403 and nothing queued; handshakes answered; long answers split under the platform's limit."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ai_assistant.connectors.splitting import utf8_bytes
from ai_assistant.messages import InboundMessage, OutboundText
from tests.connectors.cases import CASES, Case
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn
from tests.helpers import wait_until

ids = [c.platform for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_genuine_then_redelivered_is_queued_once(case: Case, make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(case.options(platform.base))
    duplicates = app.metric("ai_assistant_duplicates_total", connector="bot")
    first = app.send(case.genuine(1, platform.base))
    assert first.status_code == 200, first.text
    for again in case.redeliveries(1, platform.base):
        assert app.send(again).status_code == 200
    assert len(app.jobs()) == 1
    assert app.metric("ai_assistant_duplicates_total", connector="bot") - duplicates == 2
    # A different message is a different job.
    assert app.send(case.genuine(2, platform.base)).status_code == 200
    assert len(app.jobs()) == 2


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forged_requests_are_refused_and_queue_nothing(
    case: Case, make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(case.options(platform.base))
    rejected = app.metric("ai_assistant_webhook_rejected_total", connector="bot")
    for label, req in case.forged(3, platform.base).items():
        resp = app.send(req)
        assert resp.status_code in (401, 403), f"{label}: {resp.status_code} {resp.text}"
        body = resp.json()
        assert body["error"] in ("signature", "stale", "forbidden"), f"{label}: {body}"
        assert app.jobs() == [], f"{label} queued a job"
    now_rejected = app.metric("ai_assistant_webhook_rejected_total", connector="bot")
    assert now_rejected - rejected == len(case.forged(3, platform.base))
    # The genuine request still goes through afterwards: nothing above poisoned the de-duplication store.
    assert app.send(case.genuine(3, platform.base)).status_code == 200
    assert len(app.jobs()) == 1


@pytest.mark.parametrize("case", [c for c in CASES if c.stale], ids=[c.platform for c in CASES if c.stale])
def test_stale_request_is_refused(case: Case, make_app: AppFactory, platform: PlatformStandIn) -> None:
    assert case.stale is not None
    app = make_app(case.options(platform.base))
    resp = app.send(case.stale(4, platform.base))
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "stale"
    assert app.jobs() == []


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.handshakes()], ids=[c.platform for c in CASES if c.handshakes()]
)
def test_handshake_is_answered_and_queues_nothing(case: Case, make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(case.options(platform.base))
    for req, expected in case.handshakes():
        resp = app.send(req)
        assert resp.status_code == 200, resp.text
        if isinstance(expected, str):
            assert resp.content == expected.encode()  # bare: no quotes, BOM or newline
        else:
            assert resp.json() == expected
    assert app.jobs() == []


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_answered_exactly_once_with_the_real_model(
    case: Case, make_app: AppFactory, platform: PlatformStandIn, model_server: str
) -> None:
    app = make_app(case.options(platform.base), engine_url=model_server, workers=True)
    assert app.send(case.genuine(5, platform.base)).status_code == 200
    for again in case.redeliveries(5, platform.base):
        assert app.send(again).status_code == 200
    wait_until(lambda: app.jobs() and all(state != "queued" for _, state, _ in app.jobs()), 240, "the answer")
    assert [state for _, state, _ in app.jobs()] == ["done"]
    sends = platform.sends()
    assert len(sends) == 1, [s.path for s in sends]
    answer = sends[0].text()
    assert answer.strip()
    assert answer != app.settings.engine.error_reply, "the model did not answer"
    # A platform with access tokens fetched exactly one for this answer.
    assert len(platform.token_calls()) <= 1


LONG = (
    "Intro paragraph. " * 40
    + "\n\n```python\n"
    + "\n".join(f"print('line {i}: 数据 ✓ 🚀')" for i in range(400))
    + "\n```\n\n"
    + "结论：这是一个很长的回答。" * 300
    + " 🚀" * 500
)


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=ids)
async def test_long_answer_is_split_under_the_limit_and_sent_in_order(case: Case, platform: PlatformStandIn) -> None:
    from tests.connectors.conftest import CONNECTORS

    cls = CONNECTORS[case.platform]
    connector = cls("bot", cls.Config.model_validate(case.options(platform.base)))
    text = LONG * (30 if case.platform == "feishu" else 1)  # Feishu's limit is 150 KB
    inbound = InboundMessage(
        connector="bot",
        event_id="e-long",
        chat_id="chat-long",
        user_id="u",
        text="q",
        reply_context={
            "message_id": "om_long",
            "session_webhook": f"{platform.base}/robot/sendBySession?session=l",
            "session_webhook_expires_ms": int((time.time() + 3600) * 1000),
        },
    )
    parts = connector.split(text)
    assert len(parts) > 1
    try:
        for i, part in enumerate(parts, 1):
            await connector.send(OutboundText("bot", "chat-long", part, i, len(parts), f"e-long:{i}", inbound))
    finally:
        await connector.aclose()
    sent = [c.text() for c in platform.sends()]
    assert sent == parts
    for piece in sent:
        assert connector.measure(piece) <= connector.max_message_size
        assert piece.count("```") % 2 == 0, "a code block was cut without closing it"
        piece.encode("utf-8")  # no lone surrogate: no character was cut in half
    # Nothing lost: the same characters come out, less the whitespace and fences added at cuts.
    squash = lambda s: "".join(s.replace("```python", "").replace("```", "").split())  # noqa: E731
    assert squash("".join(sent)) == squash(text)
    if case.platform == "wecom":
        assert max(utf8_bytes(s) for s in sent) <= 2048
    if case.platform == "feishu":
        assert all(json.loads(c.body["content"])["text"] for c in platform.sends())


@pytest.fixture
def silent_model() -> Iterator[str]:
    """A model server that accepts connections and never answers: the worst case for the ack deadline. Torn down
    before the app (fixture order), so the worker's hanging call ends and the app stops promptly."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_ack_does_not_wait_for_the_model(
    case: Case, make_app: AppFactory, platform: PlatformStandIn, silent_model: str
) -> None:
    engine = {"base_url": silent_model, "model": "local", "timeout_seconds": 30, "max_retries": 0}
    app = make_app(case.options(platform.base), workers=True, engine=engine)
    resp = app.send(case.genuine(6, platform.base))
    assert resp.status_code == 200
    # Acknowledged while the only worker is still waiting on a model that will never answer.
    assert [state for _, state, _ in app.jobs()] == ["queued"]
    assert platform.sends() == []
