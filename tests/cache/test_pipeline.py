"""The answer cache inside the real pipeline: the real SQLite store, the real huggingface_hub engine client against the
stand-in model server process, which logs every request it gets (tests/faults/engine_standin.py), so the number of
engine calls is counted, not assumed. Only the platform is a recording channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.messages import InboundMessage, OutboundText
from ai_assistant.observability import ANSWER_CACHE_LOOKUPS
from ai_assistant.pipeline.answer_cache import AnswerCache, normalise
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.pipeline.worker import Pipeline
from ai_assistant.settings import AnswerCacheSettings, EngineSettings, Settings
from ai_assistant.store.redis import RedisStore
from ai_assistant.store.sqlite import SQLiteStore
from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin

pytestmark = pytest.mark.anyio


class Recorder:
    """Stands in for the IM platform: keeps what would have been posted."""

    name = "reply"

    def __init__(self) -> None:
        self.parts: list[OutboundText] = []

    async def deliver(self, part: OutboundText) -> None:
        self.parts.append(part)


@dataclass
class Rig:
    pipeline: Pipeline
    store: SQLiteStore | RedisStore
    engine: EngineStandin
    channel: Recorder
    sent = 0

    async def ask(self, text: str, chat: str, connector: str = "faq") -> str:
        self.sent += 1
        message = InboundMessage(
            connector=connector, event_id=f"e{self.sent}", chat_id=chat, user_id="u", text=text, received_at=time.time()
        )
        assert await self.store.enqueue(message, 60)
        job = await self.store.claim(30)
        assert job is not None
        await self.pipeline.process(job)
        return self.channel.parts[-1].text

    def engine_calls(self) -> int:
        return len(self.engine.requests())


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    engine_proc = EngineStandin(tmp_path).start()
    store = SQLiteStore(tmp_path / "state.sqlite3")
    settings = Settings(
        config_dir=tmp_path, data_dir=tmp_path, answer_cache=AnswerCacheSettings(connectors=["faq"], ttl_seconds=600)
    )
    engine = HFInferenceEngine(EngineSettings(base_url=engine_proc.base_url))
    words = SensitiveWordFilter([], "mask")
    channel = Recorder()
    cache = AnswerCache.from_settings(settings, store, ["faq", "chat"], kb_version=None)
    pipeline = Pipeline(settings, store, engine, {}, channel, words, words, answer_cache=cache)
    try:
        yield Rig(pipeline, store, engine_proc, channel)
    finally:
        await store.close()
        engine_proc.kill()
        await asyncio.sleep(0)


def lookups(connector: str, result: str) -> float:
    return ANSWER_CACHE_LOOKUPS.labels(connector=connector, result=result)._value.get()


async def test_a_repeated_question_in_one_connector_asks_the_engine_once(rig: Rig) -> None:
    hits, misses = lookups("faq", "hit"), lookups("faq", "miss")
    first = await rig.ask("How many days of annual leave?", chat="c1")
    again = await rig.ask("  how many days of ANNUAL leave ", chat="c2")  # another chat, spelt differently
    assert first == again == ANSWER
    assert rig.engine_calls() == 1, "the second answer came from the cache"
    assert (lookups("faq", "hit") - hits, lookups("faq", "miss") - misses) == (1, 1)
    history = await rig.store.history("faq:c2", 2)
    assert [t.content for t in history] == ["  how many days of ANNUAL leave ", ANSWER], "a hit is remembered too"


async def test_a_connector_that_did_not_opt_in_is_never_cached(rig: Rig) -> None:
    await rig.ask("Name three colours.", chat="c1", connector="chat")
    await rig.ask("Name three colours.", chat="c2", connector="chat")
    assert rig.engine_calls() == 2


async def test_no_answer_shaped_by_memory_is_reused_in_another_chat(rig: Rig) -> None:
    personal = lookups("faq", "personal")
    await rig.ask("What is the VPN address?", chat="alice")  # no memory yet: cached
    await rig.ask("And the port?", chat="alice")  # alice's memory is in the prompt: neither looked up nor stored
    assert rig.engine_calls() == 2
    assert lookups("faq", "personal") - personal == 1
    await rig.ask("And the port?", chat="bob")  # bob asks it first: no hit from alice's personal answer
    assert rig.engine_calls() == 3
    await rig.ask("What is the VPN address?", chat="carol")  # the history-free answer is shared
    assert rig.engine_calls() == 3


async def test_a_new_knowledge_base_version_is_a_miss(tmp_path: Path, rig: Rig) -> None:
    version = {"now": "g1"}

    async def kb_version() -> str:
        return version["now"]

    assert rig.pipeline.answer_cache is not None
    rig.pipeline.answer_cache.kb_version = kb_version
    await rig.ask("Where is the expense form?", chat="c1")
    await rig.ask("Where is the expense form?", chat="c2")
    assert rig.engine_calls() == 1
    version["now"] = "g2"  # an ingest
    await rig.ask("Where is the expense form?", chat="c3")
    assert rig.engine_calls() == 2


def test_normalisation_folds_width_case_spacing_and_trailing_punctuation() -> None:
    assert normalise("  ＶＰＮ  Address？ ") == normalise("vpn address") == "vpn address"
    assert normalise("年假有几天？") == normalise("年假有几天")
    assert normalise("leave policy") != normalise("leave-policy")


async def test_two_instances_on_one_redis_share_the_cache(tmp_path: Path, redis_url: str) -> None:
    import redis.asyncio as aioredis

    await aioredis.from_url(redis_url).flushdb()
    engine_proc = EngineStandin(tmp_path).start()
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path, answer_cache=AnswerCacheSettings(connectors=["faq"]))
    words = SensitiveWordFilter([], "mask")
    rigs = []
    for _ in range(2):  # two instances: their own store client, engine client and channel
        store = RedisStore(redis_url)
        engine = HFInferenceEngine(EngineSettings(base_url=engine_proc.base_url))
        channel = Recorder()
        cache = AnswerCache.from_settings(settings, store, ["faq"], kb_version=None)
        pipeline = Pipeline(settings, store, engine, {}, channel, words, words, answer_cache=cache)
        rigs.append(Rig(pipeline, store, engine_proc, channel))
    try:
        rigs[1].sent = 100  # distinct event ids across the two instances
        assert await rigs[0].ask("How do I reset my password?", chat="c1") == ANSWER
        assert await rigs[1].ask("How do I reset my password?", chat="c2") == ANSWER
        assert len(engine_proc.requests()) == 1, "the second instance found the first one's answer"
    finally:
        for rig in rigs:
            await rig.store.close()
        engine_proc.kill()
        await asyncio.sleep(0)
