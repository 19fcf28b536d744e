"""Issue 21, item 3: progressive replies. The real Slack, Feishu and Telegram connectors against the platform API
stand-in on loopback (tests/connectors/standin.py: the platforms cannot be reached here), the real engine client
streaming from the stand-in model server process (tests/faults/engine_standin.py, which can stall after the first
word), the real pipeline and SQLite store. The first words are posted, the one message is edited in place, its final
text is the checkpointed answer, and a crash between edits never posts a second message."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.channels.reply import ReplyChannel
from ai_assistant.connectors.base import Connector
from ai_assistant.connectors.feishu import FeishuConfig, FeishuConnector
from ai_assistant.connectors.slack import SlackConfig, SlackConnector
from ai_assistant.connectors.telegram import TelegramConfig, TelegramConnector
from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.messages import InboundMessage
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.pipeline.progressive import TYPING
from ai_assistant.pipeline.worker import Pipeline
from ai_assistant.settings import EngineSettings, Settings
from ai_assistant.store.sqlite import SQLiteStore
from tests.connectors.cases import FEISHU, SLACK, TELEGRAM
from tests.connectors.standin import Call, PlatformStandIn
from tests.faults.procs import EngineStandin

pytestmark = pytest.mark.anyio

ANSWER = "Our VPN needs the company app. Open it, sign in with your badge number and pick the nearest gateway."


@pytest.fixture
def platform() -> Iterator[PlatformStandIn]:
    standin = PlatformStandIn().start()
    yield standin
    standin.stop()


def build(platform_name: str, base: str, **extra: Any) -> Connector:
    options = {"progressive_interval_seconds": 0.2, **extra}
    if platform_name == "slack":
        return SlackConnector("slack", SlackConfig.model_validate({**SLACK.options(base), **options}))
    if platform_name == "telegram":
        return TelegramConnector("telegram", TelegramConfig.model_validate({**TELEGRAM.options(base), **options}))
    return FeishuConnector("feishu", FeishuConfig.model_validate({**FEISHU.options(base), **options}))


def inbound(platform_name: str, event_id: str) -> InboundMessage:
    chat = {"slack": "C1", "telegram": "777"}.get(platform_name, "oc_chat1")
    return InboundMessage(
        connector=platform_name,
        event_id=event_id,
        chat_id=chat,
        user_id="u1",
        text="How do I use the VPN?",
        received_at=time.time(),
        reply_context={"message_id": f"om_in_{event_id}"} if platform_name == "feishu" else {},
    )


def pipeline(tmp_path: Path, connector: Connector, engine_url: str) -> tuple[Pipeline, SQLiteStore]:
    store = SQLiteStore(tmp_path / "state.sqlite3")
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path)
    engine = HFInferenceEngine(EngineSettings(base_url=engine_url, max_retries=0, timeout_seconds=120))
    words = SensitiveWordFilter([], "mask")
    connectors = {connector.name: connector}
    return Pipeline(settings, store, engine, connectors, ReplyChannel(connectors), words, words), store


@pytest.mark.parametrize("platform_name", ["slack", "feishu", "telegram"])
async def test_a_streamed_reply_is_posted_once_and_edited_in_place(
    tmp_path: Path, platform: PlatformStandIn, platform_name: str
) -> None:
    engine = EngineStandin(tmp_path).start("--stall", "1.5", "--answer", ANSWER)
    connector = build(platform_name, platform.base)
    pipe, store = pipeline(tmp_path, connector, engine.base_url)
    try:
        assert await store.enqueue(inbound(platform_name, "e1"), 60)
        job = await store.claim(30)
        assert job is not None
        await pipe.process(job)
        [post] = platform.sends()
        assert _text(post) == "Our" + TYPING, "the first word is shown while the model writes"
        edits = platform.edits()
        assert len(edits) >= 2, [_text(e) for e in edits]
        assert all(_text(e).endswith(TYPING) for e in edits[:-1])
        assert _text(edits[-1]) == ANSWER, "the final edit is the checkpointed answer"
        targets = {str(e.body.get("ts") or e.body.get("message_id") or e.path) for e in edits}
        assert len(targets) == 1 and "" not in targets, "every edit is of the one posted message"
    finally:
        await store.close()
        await connector.aclose()
        engine.kill()


def saved_ref(db: Path) -> Any:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT reply_ref FROM jobs").fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("platform_name", ["slack", "feishu", "telegram"])
async def test_a_crash_between_edits_does_not_post_a_second_message(
    tmp_path: Path, platform: PlatformStandIn, platform_name: str
) -> None:
    # The first answer stalls after its first word: the worker "crashes" there, after posting and checkpointing.
    engine = EngineStandin(tmp_path).start("--stall", "60", "--stall-count", "1", "--answer", ANSWER)
    connector = build(platform_name, platform.base)
    pipe, store = pipeline(tmp_path, connector, engine.base_url)
    try:
        assert await store.enqueue(inbound(platform_name, "e2"), 60)
        first = await store.claim(1.0)
        assert first is not None
        work = asyncio.create_task(pipe.process(first))
        deadline = time.monotonic() + 60
        while saved_ref(tmp_path / "state.sqlite3") is None:
            assert time.monotonic() < deadline and not work.done(), "the first words were never posted"
            await asyncio.sleep(0.05)
        work.cancel()  # the worker dies mid-answer; its lease runs out
        with pytest.raises(asyncio.CancelledError):
            await work
        resumed = None
        while resumed is None:
            assert time.monotonic() < deadline, "the job never became visible again"
            resumed = await store.claim(30)
            await asyncio.sleep(0.05)
        assert resumed.reply_ref == saved_ref(tmp_path / "state.sqlite3")
        await pipe.process(resumed)
        assert len(platform.sends()) == 1, "resumed, the job edits the message it posted; it never posts again"
        assert _text(platform.edits()[-1]) == ANSWER
        assert await store.claim(30) is None, "the job is complete"
    finally:
        await store.close()
        await connector.aclose()
        engine.kill()


async def test_an_unconfirmed_first_post_falls_back_to_one_full_message(
    tmp_path: Path, platform: PlatformStandIn
) -> None:
    """Slack has no idempotency key: a first post that timed out may or may not show. The answer is then posted in
    full as one message rather than lost behind a half-written stub (which, if it was posted, is the one extra)."""
    engine = EngineStandin(tmp_path).start("--answer", ANSWER)
    connector = build("slack", platform.base, http_timeout_seconds=1.0, retry_backoff_seconds=0.05)
    pipe, store = pipeline(tmp_path, connector, engine.base_url)
    platform.stall("/chat.postMessage", posted=True)
    try:
        assert await store.enqueue(inbound("slack", "e3"), 60)
        job = await store.claim(30)
        assert job is not None
        await pipe.process(job)
        platform.release()
        assert [_text(c) for c in platform.copies()] == ["Our" + TYPING, ANSWER]
        assert platform.edits() == [], "nothing to edit: the stub's id never came back"
    finally:
        await store.close()
        await connector.aclose()
        engine.kill()


def _text(call: Call) -> str:
    return call.text()
