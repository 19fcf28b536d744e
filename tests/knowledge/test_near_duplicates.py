"""The embedded store returns the exact top-k on a corpus of near-duplicates (policy versions, FAQ variants).

Tight clusters are where an HNSW graph built with a narrow `expansion_add` leaves members unreachable: on the
100k benchmark corpus recall@10 was 0.62-0.80 with the old default (bench/kb_bench.py, docs/benchmarks.md). Recall here
is measured against brute force over the same vectors; no timing is asserted (benchmarks live in bench/).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores import embedded
from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord, state_dir
from ai_assistant.knowledge.stores.embedded import EmbeddedStore

DIM = 96
CLUSTERS, PER_CLUSTER = 60, 50
K = 10


def corpus(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CLUSTERS x PER_CLUSTER unit vectors whose members have cosine ~0.96 with each other, and queries that are
    members nudged to cosine ~0.93 with their source (the shape bench/kb_bench.py uses at 100k)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = np.sqrt((1 / 0.96 - 1) / DIM)
    vectors = np.repeat(centres, PER_CLUSTER, axis=0) + rng.standard_normal((CLUSTERS * PER_CLUSTER, DIM)) * sigma
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.choice(len(vectors), 150, replace=False)
    queries = vectors[picks] + rng.standard_normal((len(picks), DIM)) * np.sqrt((1 / 0.93**2 - 1) / DIM)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return vectors.astype(np.float32), queries.astype(np.float32)


def fill(store: EmbeddedStore, vectors: np.ndarray) -> None:
    # One document per cluster, as versions of one policy would be ingested together.
    for c in range(CLUSTERS):
        part = vectors[c * PER_CLUSTER : (c + 1) * PER_CLUSTER]
        doc_id = f"policy{c}"
        chunks = [
            Chunk(doc_id, i, "Policy", f"{doc_id}.md", "", "", str(c * PER_CLUSTER + i), "0" * 64)
            for i in range(len(part))
        ]
        store.replace_document(DocumentRecord(doc_id, "Policy", f"{doc_id}.md", "", "0" * 64, len(chunks), 1, 0.0),
                               chunks, part)  # fmt: skip


def recall(store: EmbeddedStore, vectors: np.ndarray, queries: np.ndarray) -> float:
    found = 0
    for q in queries:
        exact = vectors @ q
        truth = set(np.argsort(-exact)[:K].tolist())
        hits = store.search(q, K)
        assert len(hits) == K
        rows = [int(h.chunk.text) for h in hits]
        found += len(truth & set(rows))
        # The scores are the exact cosines of the stored vectors, best first.
        np.testing.assert_allclose([h.score for h in hits], exact[rows], atol=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    return found / (K * len(queries))


def test_shipped_defaults_return_the_exact_top_k_on_near_duplicates(tmp_path: Path) -> None:
    vectors, queries = corpus(seed=3)
    store = EmbeddedStore.from_settings(KnowledgeSettings(), tmp_path, DIM, "test-model")
    try:
        fill(store, vectors)
        assert recall(store, vectors, queries) >= 0.98
    finally:
        store.close()
    # The index saved on close and restored on open answers the same.
    reopened = EmbeddedStore.from_settings(KnowledgeSettings(), tmp_path, DIM, "test-model")
    try:
        assert recall(reopened, vectors, queries) >= 0.98
    finally:
        reopened.close()


def test_the_corpus_defeats_a_narrow_graph(tmp_path: Path) -> None:
    """The check above can fail: the same corpus with a narrow build and search misses true neighbours."""
    vectors, queries = corpus(seed=3)
    store = EmbeddedStore(tmp_path, DIM, "test-model", connectivity=4, expansion_add=16, expansion_search=16)
    try:
        fill(store, vectors)
        assert recall(store, vectors, queries) < 0.95
    finally:
        store.close()


def test_an_index_saved_at_another_degree_is_rebuilt_at_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store saved with another graph degree (16 before ADR 0063's amendment) is rebuilt from SQLite on open, so the
    new search breadth runs on the graph it was chosen for; a store saved at the setting is restored as it is, with the
    configured build breadth (usearch restores its own default)."""
    vectors, queries = corpus(seed=5)
    before = KnowledgeSettings.model_validate({"store": {"connectivity": 16, "expansion_search": 256}})
    old = EmbeddedStore.from_settings(before, tmp_path, DIM, "test-model")
    try:
        fill(old, vectors)
    finally:
        old.close()
    shipped = KnowledgeSettings().store
    assert shipped.connectivity != 16, "the shipped degree changed back: this test no longer covers an upgrade"
    caplog.set_level(logging.INFO, logger="ai_assistant.knowledge.stores.embedded")
    upgraded = EmbeddedStore.from_settings(KnowledgeSettings(), tmp_path, DIM, "test-model")
    try:
        assert upgraded.index.connectivity == shipped.connectivity
        assert "built with connectivity 16" in caplog.text and "rebuilt knowledge index: 3000 chunks" in caplog.text
        assert recall(upgraded, vectors, queries) >= 0.98
    finally:
        upgraded.close()
    caplog.clear()
    reopened = EmbeddedStore.from_settings(KnowledgeSettings(), tmp_path, DIM, "test-model")
    try:
        assert "rebuil" not in caplog.text, caplog.text
        assert reopened.index.connectivity == shipped.connectivity
        assert (reopened.index.expansion_add, reopened.index.expansion_search) == (
            shipped.expansion_add,
            shipped.expansion_search,
        )
        assert recall(reopened, vectors, queries) >= 0.98
    finally:
        reopened.close()


def test_a_store_opened_directly_is_the_shipped_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Tests, benchmarks and tools that open the store without settings get the shipped graph, and reopening what
    the service saved does not rebuild it at another degree."""
    vectors, _ = corpus(seed=7)
    service = EmbeddedStore.from_settings(KnowledgeSettings(), tmp_path, DIM, "test-model")
    try:
        fill(service, vectors)
    finally:
        service.close()
    shipped = KnowledgeSettings().store
    caplog.set_level(logging.INFO, logger="ai_assistant.knowledge.stores.embedded")
    direct = EmbeddedStore(state_dir(tmp_path), DIM, "test-model")  # where from_settings keeps it
    try:
        assert "rebuil" not in caplog.text, caplog.text
        assert direct.count_chunks() == len(vectors), "not the store the service saved"
        index = direct.index
        assert (index.connectivity, index.expansion_add, index.expansion_search) == (
            shipped.connectivity,
            shipped.expansion_add,
            shipped.expansion_search,
        )
    finally:
        direct.close()


def with_dtype(dtype: str) -> KnowledgeSettings:
    return KnowledgeSettings.model_validate({"store": {"vector_dtype": dtype}})


@pytest.mark.parametrize("dtype", ["f16", "i8"])
def test_a_quantised_index_returns_the_exact_top_k_and_cosines(tmp_path: Path, dtype: str) -> None:
    """f16 and i8 hold the index's vectors approximately; the candidates re-scored with SQLite's f32 vectors give the
    exact top-k and the exact cosines (`recall` checks both), before and after a save and restore."""
    store = EmbeddedStore.from_settings(with_dtype(dtype), tmp_path, DIM, "test-model")
    vectors, queries = corpus(seed=3)
    try:
        fill(store, vectors)
        assert store.index.dtype.name.lower() == dtype
        assert recall(store, vectors, queries) >= 0.98
    finally:
        store.close()
    reopened = EmbeddedStore.from_settings(with_dtype(dtype), tmp_path, DIM, "test-model")
    try:
        assert reopened.index.dtype.name.lower() == dtype
        assert recall(reopened, vectors, queries) >= 0.98
    finally:
        reopened.close()


def test_i8_without_re_scoring_misses_near_duplicates(tmp_path: Path) -> None:
    """The check above can fail: i8 cosines are too coarse to order members of one cluster, so the index's own top-k
    (one candidate per hit: only the k it returns are re-scored) misses true neighbours."""
    store = EmbeddedStore.from_settings(with_dtype("i8"), tmp_path, DIM, "test-model")
    store.rerank_factor = 1
    vectors, queries = corpus(seed=3)
    try:
        fill(store, vectors)
        assert recall(store, vectors, queries) < 0.95
    finally:
        store.close()


def test_an_index_saved_at_another_dtype_is_rebuilt_at_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a changed degree: a store saved with f32 vectors and opened with `vector_dtype: i8` rebuilds its index
    from SQLite (the f32 truth), so the memory saving applies to existing stores too; the next open restores it."""
    monkeypatch.setattr(embedded, "_REBUILD_BATCH", 1000)  # three batches: the rebuild reads SQLite a batch at a time
    vectors, queries = corpus(seed=5)
    old = EmbeddedStore.from_settings(with_dtype("f32"), tmp_path, DIM, "test-model")
    try:
        fill(old, vectors)
        f32_bytes = old.index.serialized_length
    finally:
        old.close()
    caplog.set_level(logging.INFO, logger="ai_assistant.knowledge.stores.embedded")
    quantised = EmbeddedStore.from_settings(with_dtype("i8"), tmp_path, DIM, "test-model")
    try:
        assert quantised.index.dtype.name.lower() == "i8"
        assert "vector_dtype f32" in caplog.text and "rebuilt knowledge index: 3000 chunks" in caplog.text
        assert quantised.index.serialized_length < f32_bytes  # 96 bytes a vector instead of 384, the same graph
        assert recall(quantised, vectors, queries) >= 0.98
    finally:
        quantised.close()
    caplog.clear()
    reopened = EmbeddedStore.from_settings(with_dtype("i8"), tmp_path, DIM, "test-model")
    try:
        assert "rebuil" not in caplog.text, caplog.text
        assert reopened.index.dtype.name.lower() == "i8"
        assert recall(reopened, vectors, queries) >= 0.98
    finally:
        reopened.close()
