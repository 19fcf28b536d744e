"""The state a restore must bring back, written and read through the service's own store classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord
from ai_assistant.knowledge.stores.embedded import EmbeddedStore
from ai_assistant.messages import ChatTurn, InboundMessage
from ai_assistant.store.base import StateStore

DIM = 16
MODEL = "test-vectors-16"
TTL = 24 * 3600.0
CHAT = "chat-1"


def message(event_id: str, text: str) -> InboundMessage:
    return InboundMessage(connector="im", event_id=event_id, chat_id=CHAT, user_id="u-1", text=text)


ANSWERED = message("evt-answered", "What is the leave policy?")
QUEUED = message("evt-queued", "And for part-time staff?")


async def write_conversation(store: StateStore) -> None:
    """One answered message (memory + de-duplication key) and one that is queued but not answered yet."""
    assert await store.enqueue(ANSWERED, TTL)
    job = await store.claim(30)
    assert job is not None and job.message.event_id == ANSWERED.event_id
    turns = [ChatTurn("user", ANSWERED.text), ChatTurn("assistant", "25 days a year.")]
    assert await store.save_answer(
        job.id, job.lease_token, "25 days a year.", "answered", ANSWERED.conversation_key, turns, 6
    )
    assert await store.complete(job.id, job.lease_token)
    assert await store.enqueue(QUEUED, TTL)


@dataclass(frozen=True)
class KbProbe:
    query: np.ndarray
    hits: list[tuple[str, str]]


def write_kb(data_dir: Path) -> KbProbe:
    rng = np.random.default_rng(18)
    store = EmbeddedStore(data_dir / "knowledge", DIM, MODEL)
    try:
        for d in range(3):
            doc_id = f"doc-{d}"
            texts = [f"document {d} paragraph {i}" for i in range(4)]
            chunks = [
                Chunk(doc_id, i, f"Doc {d}", f"kb/doc-{d}.md", "", "", t, f"h{d}{i}") for i, t in enumerate(texts)
            ]
            record = DocumentRecord(doc_id, f"Doc {d}", f"kb/doc-{d}.md", "", f"hash-{d}", 4, 100, 1.0)
            store.replace_document(record, chunks, rng.standard_normal((4, DIM)).astype(np.float32))
        store.flush()
        query = rng.standard_normal((1, DIM)).astype(np.float32)
        return KbProbe(query, kb_hits(store, query))
    finally:
        store.close()


def kb_hits(store: EmbeddedStore, query: np.ndarray) -> list[tuple[str, str]]:
    return [(h.chunk.doc_id, h.chunk.text) for h in store.search(query, 5)]


def read_kb(data_dir: Path, query: np.ndarray) -> list[tuple[str, str]]:
    store = EmbeddedStore(data_dir / "knowledge", DIM, MODEL)
    try:
        return kb_hits(store, query)
    finally:
        store.close()
