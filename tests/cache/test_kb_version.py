"""The knowledge base's version, the answer cache's key part that an ingest or a delete changes: the real embedded
store, written by one handle and read by another (as `kb ingest` writes beside the running service). Vectors are
random unit vectors: what is tested is the bookkeeping, not retrieval."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from ai_assistant.knowledge.retrieval import KnowledgeBase
from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord, doc_id_for
from ai_assistant.knowledge.stores.embedded import EmbeddedStore

DIM = 8


def document(source: str, text: str) -> tuple[DocumentRecord, list[Chunk], np.typing.NDArray[np.float32]]:
    doc_id = doc_id_for(source)
    digest = hashlib.sha256(text.encode()).hexdigest()
    record = DocumentRecord(doc_id, source, source, "", digest, 1, len(text), time.time())
    chunk = Chunk(doc_id, 0, source, source, "", "", text, digest)
    vector = np.random.default_rng(len(text)).normal(size=(1, DIM)).astype(np.float32)
    return record, [chunk], vector / np.linalg.norm(vector)


def kb_over(store: EmbeddedStore) -> KnowledgeBase:
    # The embedder is not used by version_sync; None keeps the embedding model out of a bookkeeping test.
    return KnowledgeBase(KnowledgeSettings(), None, store)  # type: ignore[arg-type]


def test_every_write_from_any_handle_changes_the_version(tmp_path: Path) -> None:
    service = EmbeddedStore(tmp_path / "kb", DIM, "test-model")
    cli = EmbeddedStore(tmp_path / "kb", DIM, "test-model")  # `kb ingest` in another process, same files
    try:
        seen = [kb_over(service).version_sync()]
        cli.replace_document(*document("leave.md", "Annual leave is twenty days."))
        seen.append(kb_over(service).version_sync())
        cli.replace_document(*document("leave.md", "Annual leave is twenty-five days."))
        seen.append(kb_over(service).version_sync())
        cli.delete_document(doc_id_for("leave.md"))
        seen.append(kb_over(service).version_sync())
        assert len(set(seen)) == 4, seen
        assert kb_over(service).version_sync() == seen[-1], "reading changes nothing"
    finally:
        service.close()
        cli.close()


class CounterlessStore(EmbeddedStore):
    """A store without a version counter of its own, as Weaviate is: the digest of the document list stands in."""

    version = None  # type: ignore[assignment]


def test_a_store_without_a_counter_is_versioned_by_its_document_list(tmp_path: Path) -> None:
    store = CounterlessStore(tmp_path / "kb", DIM, "test-model")
    try:
        kb = kb_over(store)
        empty = kb.version_sync()
        store.replace_document(*document("vpn.md", "The VPN uses WireGuard."))
        added = kb.version_sync()
        store.replace_document(*document("vpn.md", "The VPN uses WireGuard on port 51820."))
        replaced = kb.version_sync()
        assert len({empty, added, replaced}) == 3 and all(v.startswith("d") for v in (empty, added, replaced))
        assert kb.version_sync() == replaced
    finally:
        store.close()
