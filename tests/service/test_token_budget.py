"""Issue 16, item 7: the prompt is fitted to the model's context window. Memory goes first, then the weakest
documents; the system prompt and the question always stay; a question that cannot fit gets a clear reply, not
"engine unavailable". The real pipeline, SQLite store and huggingface_hub engine, against the stand-in model server
(no tokenizer endpoint: the estimate) and the real llama.cpp server (its own tokenizer)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ai_assistant.engines.base import estimate_tokens
from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.messages import ChatTurn, InboundMessage, OutboundText
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.pipeline.worker import Grounding, Pipeline
from ai_assistant.settings import EngineSettings, Settings
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


DOCS = tuple(f'<document id="{i}" title="d{i}">\n' + f"fact {i} " * 40 + "\n</document>" for i in range(1, 4))


async def _with_docs(message: InboundMessage, text: str) -> Grounding:
    return Grounding(system="Use the documents.", documents=DOCS, footer="")


def _pipeline(tmp_path: Path, base_url: str, context_tokens: int, retrieve: bool = False) -> tuple[Pipeline, Recorder]:
    engine_settings = EngineSettings(base_url=base_url, context_tokens=context_tokens, max_tokens=64)
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path, engine=engine_settings)
    channel = Recorder()
    words = SensitiveWordFilter([], "mask")
    store = SQLiteStore(tmp_path / "state.sqlite3")
    engine = HFInferenceEngine(engine_settings)
    pipeline = Pipeline(settings, store, engine, {}, channel, words, words, retriever=_with_docs if retrieve else None)
    return pipeline, channel


async def _ask(pipeline: Pipeline, event_id: str, text: str) -> None:
    message = InboundMessage(
        connector="im", event_id=event_id, chat_id="c1", user_id="u", text=text, received_at=time.time()
    )
    assert await pipeline.store.enqueue(message, 60)
    job = await pipeline.store.claim(30)
    assert job is not None
    await pipeline.process(job)


async def _remember(pipeline: Pipeline, exchanges: int, size: int) -> None:
    for i in range(exchanges):
        message = InboundMessage(connector="im", event_id=f"old-{i}", chat_id="c1", user_id="u", text="q")
        assert await pipeline.store.enqueue(message, 60)
        job = await pipeline.store.claim(30)
        assert job is not None
        turns = [ChatTurn("user", f"question {i} " + "x" * size), ChatTurn("assistant", f"answer {i} " + "y" * size)]
        assert await pipeline.store.save_answer(job.id, job.lease_token, "a", "answered", "im:c1", turns, 6)
        assert await pipeline.store.complete(job.id, job.lease_token)


def test_the_estimate_is_high_for_latin_and_cjk() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 300) == 100
    assert estimate_tokens("年假" * 10) == 40


async def test_memory_goes_first_then_documents_and_the_question_stays(tmp_path: Path) -> None:
    engine = EngineStandin(tmp_path).start()
    # Estimates: system prompt ~35, question ~5, each remembered turn ~80, each document ~110 tokens.
    pipeline, channel = _pipeline(tmp_path, engine.base_url, context_tokens=64 + 560, retrieve=True)
    try:
        await _remember(pipeline, exchanges=3, size=220)
        await _ask(pipeline, "e1", "How many days?")
        sent = engine.requests()[-1]["body"]["messages"]
        roles = [m["role"] for m in sent]
        question = sent[-1]["content"]
        assert roles[0] == "system" and roles[-1] == "user" and question.endswith("How many days?")
        remembered = [m["content"] for m in sent[1:-1]]
        assert all(text.startswith(("question 2", "answer 2")) for text in remembered), "oldest exchanges dropped"
        assert question.count("<document id=") == 3, "documents kept while memory could make room"

        await _ask(pipeline, "e2", "How many days, and why? " + "Please be precise. " * 30)
        sent = engine.requests()[-1]["body"]["messages"]
        assert [m["role"] for m in sent] == ["system", "user"], "all memory dropped first"
        question = sent[-1]["content"]
        assert 0 < question.count("<document id=") < 3 and '<document id="1"' in question, "the weakest went"
        assert question.endswith("Please be precise. ")
        assert [p.text for p in channel.parts] == [ANSWER, ANSWER]
    finally:
        await pipeline.store.close()
        engine.kill()


async def test_a_question_too_long_for_the_model_gets_a_clear_reply(tmp_path: Path) -> None:
    engine = EngineStandin(tmp_path).start()
    pipeline, channel = _pipeline(tmp_path, engine.base_url, context_tokens=512)
    try:
        await _ask(pipeline, "e-long", "word " * 2000)
        [part] = channel.parts
        assert part.text.startswith("Your message is too long for me to read at once (about 3334 tokens"), part.text
        assert engine.requests() == [], "the model was not asked"
        assert await pipeline.store.history("im:c1", 4) == [], "nothing remembered"
    finally:
        await pipeline.store.close()
        engine.kill()


@pytest.mark.model
async def test_the_real_server_counts_and_an_overlong_question_is_answered_plainly(
    tmp_path: Path, model_server: str
) -> None:
    pipeline, channel = _pipeline(tmp_path, model_server, context_tokens=2048)
    engine = pipeline.engine
    assert isinstance(engine, HFInferenceEngine)
    try:
        short, long = await engine.count_tokens(["Hello there, how are you?", "hello " * 1000])
        assert engine._tokenizer == "llama.cpp", "the server's own tokenizer, not the estimate"
        assert 3 <= short <= 12 and 900 <= long <= 2100, (short, long)
        await _ask(pipeline, "e-huge", "Summarise this: " + "lorem ipsum dolor sit amet " * 800)
        await _ask(pipeline, "e-fits", "Name three colours.")
        huge, fits = (p.text for p in channel.parts)
        assert huge.startswith("Your message is too long"), huge
        assert fits and not fits.startswith(("Your message", "Sorry")), fits
    finally:
        await pipeline.store.close()
