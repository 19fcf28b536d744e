"""Issue 21, item 3: the answer mode per connector and per chat. The real pipeline, the real SmolLM2 model server,
the real embedded knowledge base with the sample corpus and the service's own retriever, a real SQLite store; only
the platform is a recording channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.knowledge.grounding import GENERAL_NOTE, NO_HIT_TEXT
from ai_assistant.pipeline.worker import Retriever
from ai_assistant.settings import EngineSettings
from ai_assistant.store.sqlite import SQLiteStore

from .conftest import Harness, harness, message

pytestmark = [pytest.mark.anyio, pytest.mark.model]

OUTSIDE = "Translate 'good morning' into French."  # no sample document is about this
INSIDE = "How many days of annual leave do employees get?"  # samples/knowledge/leave-policy.md


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "state.sqlite3")
    yield store
    await store.close()


@pytest.fixture
def engine_settings(model_server: str) -> EngineSettings:
    # A short answer keeps the small model quick on a shared machine; its content is not what is tested.
    return EngineSettings(base_url=model_server, model="local", max_tokens=24, timeout_seconds=120)


def make(
    tmp_path: Path, store: SQLiteStore, engine_settings: EngineSettings, retriever: Retriever, **options: object
) -> Harness:
    engine = HFInferenceEngine(engine_settings)
    return harness(tmp_path, store, engine, retriever=retriever, engine_settings=engine_settings, **options)


async def test_knowledge_first_is_the_default_and_marks_a_general_answer(
    tmp_path: Path, store: SQLiteStore, engine_settings: EngineSettings, kb_retriever: Retriever
) -> None:
    h = make(tmp_path, store, engine_settings, kb_retriever)
    reply = await h.ask(message("e-out", OUTSIDE))
    assert reply.endswith("\n\n" + GENERAL_NOTE["en"]), reply
    model_text = reply.removesuffix(GENERAL_NOTE["en"]).strip()
    assert model_text and NO_HIT_TEXT["en"] not in reply, "the model answered, not the canned no-hit text"
    history = await store.history("im:c1", 4)
    assert [t.role for t in history] == ["user", "assistant"] and history[0].content == OUTSIDE
    assert GENERAL_NOTE["en"] not in history[1].content, "the memory keeps the model's own words"

    grounded = await h.ask(message("e-in", INSIDE))
    assert "Sources:" in grounded and GENERAL_NOTE["en"] not in grounded, grounded


async def test_knowledge_only_keeps_the_canned_answer_and_a_chat_can_override_it(
    tmp_path: Path, store: SQLiteStore, engine_settings: EngineSettings, kb_retriever: Retriever
) -> None:
    note = "-- not from our handbook --"
    h = make(
        tmp_path,
        store,
        engine_settings,
        kb_retriever,
        answer_mode="knowledge_only",
        general_answer_note=note,
        chats={"c2": {"answer_mode": "knowledge_first"}},
    )
    assert await h.ask(message("e-1", OUTSIDE)) == NO_HIT_TEXT["en"]
    assert await store.history("im:c1", 4) == [], "a canned answer is not remembered"
    overridden = await h.ask(message("e-2", OUTSIDE, chat="c2"))
    assert overridden.endswith("\n\n" + note) and overridden.removesuffix(note).strip(), overridden


async def test_general_mode_does_not_retrieve(
    tmp_path: Path, store: SQLiteStore, engine_settings: EngineSettings, kb_retriever: Retriever
) -> None:
    h = make(tmp_path, store, engine_settings, kb_retriever, answer_mode="general")
    reply = await h.ask(message("e-g", INSIDE))
    assert reply.strip() and "Sources:" not in reply and GENERAL_NOTE["en"] not in reply, reply
