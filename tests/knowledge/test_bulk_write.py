"""Several documents written in one step: the embedded store's `replace_documents` and the ingestor's batches.

The store writes a batch in one SQLite transaction and adds its chunks to the index in one call, on several threads
when the batch is large. What must not change: a crash leaves every document at its old or its new version, never
half; the index is rebuilt from SQLite when it is behind; recall on near-duplicates holds on the parallel path.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ai_assistant
from ai_assistant.knowledge import ingest
from ai_assistant.knowledge.errors import StoreError
from ai_assistant.knowledge.ingest import Ingestor, collect
from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores import embedded
from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord, Replacement, Vector
from ai_assistant.knowledge.stores.embedded import EmbeddedStore, Keys, _insert_threads, _relink_unreachable

from .test_near_duplicates import CLUSTERS, DIM, PER_CLUSTER, corpus, recall

SMALL_DIM = 16


def version(doc_id: str, tag: str, n: int, seed: int) -> Replacement:
    """Document `doc_id` at version `tag`: n chunks whose text names both, with random vectors."""
    stamp = tag.ljust(64, "0")
    chunks = [Chunk(doc_id, i, doc_id, f"{doc_id}.md", "", "", f"{doc_id} {tag} {i}", stamp) for i in range(n)]
    vectors = np.random.default_rng(seed).standard_normal((n, SMALL_DIM)).astype(np.float32)
    return Replacement(DocumentRecord(doc_id, doc_id, f"{doc_id}.md", "", stamp, n, 1, 0.0), chunks, vectors)


def state(store: EmbeddedStore) -> dict[str, str]:
    """doc_id -> version, from SQLite; the index must agree: every stored chunk is found by its own vector."""
    versions = {d.doc_id: d.content_hash.rstrip("0") for d in store.list_documents()}
    assert len(store.index) == store.count_chunks()
    return versions


def found_by_own_vector(store: EmbeddedStore, replacement: Replacement) -> bool:
    return all(
        store.search(vector, 1)[0].chunk.text == chunk.text
        for chunk, vector in zip(replacement.chunks, replacement.vectors, strict=True)
    )


def test_a_batch_replaces_documents_together_and_a_repeated_doc_id_ends_at_its_last_version(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    try:
        store.replace_documents([version("a", "v1", 3, 1), version("b", "v1", 4, 2)])
        before = store.version()
        a2, b2, b3 = version("a", "v2", 5, 3), version("b", "v2", 2, 4), version("b", "v3", 3, 5)
        store.replace_documents([a2, b2, b3])
        assert store.version() == before + 1, "one batch, one generation"
        assert state(store) == {"a": "v2", "b": "v3"}
        assert store.count_chunks() == 5 + 3
        assert found_by_own_vector(store, a2) and found_by_own_vector(store, b3)
    finally:
        store.close()


def test_a_batch_with_a_wrong_vector_shape_changes_nothing(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    try:
        store.replace_documents([version("a", "v1", 3, 1)])
        bad = version("b", "v1", 3, 2)
        with pytest.raises(ValueError, match=r"b\.md: 3 chunks but 2 vectors"):
            store.replace_documents([version("a", "v2", 3, 3), Replacement(bad.record, bad.chunks, bad.vectors[:2])])
        assert state(store) == {"a": "v1"}
    finally:
        store.close()


def test_an_error_half_way_through_a_batch_rolls_every_document_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    try:
        a1, b1 = version("a", "v1", 3, 1), version("b", "v1", 3, 2)
        store.replace_documents([a1, b1])
        real_row = embedded._chunk_row

        def failing_row(chunk: Chunk) -> tuple[str, int, str, str, str, str, str, str]:
            if chunk.doc_id == "b" and chunk.position == 1:
                raise StoreError("disk full")
            return real_row(chunk)

        monkeypatch.setattr(embedded, "_chunk_row", failing_row)
        with pytest.raises(StoreError, match="disk full"):
            store.replace_documents([version("a", "v2", 4, 3), version("b", "v2", 4, 4)])
        assert state(store) == {"a": "v1", "b": "v1"}
        assert found_by_own_vector(store, a1) and found_by_own_vector(store, b1)
    finally:
        store.close()


def crash_while_writing(directory: Path, crash_in: str) -> None:
    """In another process: open the store, start writing a2 and b2 together, and die without any cleanup (os._exit,
    as under SIGKILL or a power cut) inside `crash_in` of the embedded module."""
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from ai_assistant.knowledge.stores import embedded
        from tests.knowledge.test_bulk_write import SMALL_DIM, version

        real = getattr(embedded, {crash_in!r})

        def crash(*args):
            # _chunk_row: half-way through b's chunks; _insert_threads: after the commit, before the index add.
            if {crash_in!r} == "_insert_threads" or (args[0].doc_id == "b" and args[0].position == 2):
                os._exit(9)
            return real(*args)

        setattr(embedded, {crash_in!r}, crash)
        store = embedded.EmbeddedStore(Path({str(directory)!r}), SMALL_DIM, "test-model")
        store.replace_documents([version("a", "v2", 4, 3), version("b", "v2", 4, 4)])
        raise SystemExit("not reached")
    """)
    paths = [str(Path(ai_assistant.__file__).parents[1]), str(Path(__file__).parents[2])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr


def test_a_crash_half_way_through_a_batch_leaves_every_document_at_its_old_version(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    a1, b1 = version("a", "v1", 3, 1), version("b", "v1", 3, 2)
    store.replace_documents([a1, b1])
    store.close()
    crash_while_writing(tmp_path, "_chunk_row")
    reopened = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    try:
        assert state(reopened) == {"a": "v1", "b": "v1"}
        assert found_by_own_vector(reopened, a1) and found_by_own_vector(reopened, b1)
    finally:
        reopened.close()


def test_a_crash_after_the_commit_rebuilds_the_index_with_every_new_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    store.replace_documents([version("a", "v1", 3, 1), version("b", "v1", 3, 2)])
    store.close()
    crash_while_writing(tmp_path, "_insert_threads")
    caplog.set_level(logging.INFO, logger="ai_assistant.knowledge.stores.embedded")
    reopened = EmbeddedStore(tmp_path, SMALL_DIM, "test-model")
    try:
        assert "rebuilt knowledge index: 8 chunks" in caplog.text
        assert state(reopened) == {"a": "v2", "b": "v2"}
        assert found_by_own_vector(reopened, version("a", "v2", 4, 3))
        assert found_by_own_vector(reopened, version("b", "v2", 4, 4))
    finally:
        reopened.close()


def test_insert_threads_never_put_two_chunks_of_a_document_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_PARALLEL_MIN", 1000)
    assert _insert_threads([100] * 9, cores=2) == 1, "below the threshold: one thread"
    assert _insert_threads([100] * 10, cores=2) == 2
    assert _insert_threads([100] * 10, cores=1) == 1
    # usearch runs ranges of ceil(n / t) side by side: a document longer than a range would be split between two.
    assert _insert_threads([1000, 1000], cores=2) == 2
    assert _insert_threads([1001, 999], cores=2) == 1
    assert _insert_threads([1000, 1000, 1000, 10], cores=4) == 3  # ceil(3,010 / 4) = 753 < 1,000 <= 1,004
    assert _insert_threads([], cores=2) == 1


def test_insert_threads_take_only_the_cores_other_processes_leave_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """(now, busy seconds of all cores, this process's CPU seconds) as /proc/stat and the process report them."""
    samples = iter(
        [
            (0.0, 0.0, 0.0),  # at open
            (10.0, 19.0, 18.5),  # this process busy on both cores, others 0.05 of a core: both cores
            (20.0, 37.0, 27.5),  # others busy on 0.9 of a core: one
            (20.05, 37.1, 27.5),  # too short to tell: the last answer
            (30.0, 47.0, 36.5),  # others 0.1: both again
            None,  # /proc/stat unreadable: every core
        ]
    )
    monkeypatch.setattr(embedded, "_cpu_seconds", lambda: next(samples))
    monkeypatch.setattr(embedded.os, "sched_getaffinity", lambda pid: {0, 1})
    idle = embedded.IdleCores()
    assert [idle() for _ in range(5)] == [2, 1, 1, 2, 2]
    monkeypatch.setattr(embedded, "_cpu_seconds", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(embedded.os, "sched_getaffinity", lambda pid: {0})
    assert embedded.IdleCores()() == 1, "pinned to one core"


def test_the_processor_counters_are_read_where_the_service_runs() -> None:
    sample = embedded._cpu_seconds()
    if sample is None:
        pytest.skip("no /proc/stat here: every core counts as idle")
    now, busy, own = sample
    assert now > 0 and busy > 0 and own > 0


def test_near_duplicates_written_in_one_parallel_batch_keep_their_recall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest of a folder of policies: every cluster a document, all in one batch on two threads (the shipped
    settings otherwise); recall as test_near_duplicates.py asks of the one-document-at-a-time path. Without the
    relinking of unreachable vectors, 2 of 60 such builds were below 0.96 here; with it, 180 gave 0.9993-1.0000."""
    monkeypatch.setattr(embedded.IdleCores, "__call__", lambda self: 2)
    chosen: list[int] = []
    real = embedded._insert_threads

    def noting(sizes: list[int], cores: int) -> int:
        chosen.append(real(sizes, cores))
        return chosen[-1]

    monkeypatch.setattr(embedded, "_insert_threads", noting)
    vectors, queries = corpus(seed=3)
    store = EmbeddedStore.from_settings(KnowledgeSettings(), tmp_path, DIM, "test-model")
    try:
        batch = []
        for c in range(CLUSTERS):
            doc_id = f"policy{c}"
            chunks = [
                Chunk(doc_id, i, "Policy", f"{doc_id}.md", "", "", str(c * PER_CLUSTER + i), "0" * 64)
                for i in range(PER_CLUSTER)
            ]
            record = DocumentRecord(doc_id, "Policy", f"{doc_id}.md", "", "0" * 64, PER_CLUSTER, 1, 0.0)
            batch.append(Replacement(record, chunks, vectors[c * PER_CLUSTER : (c + 1) * PER_CLUSTER]))
        store.replace_documents(batch)
        assert chosen == [2]
        assert recall(store, vectors, queries) >= 0.98
    finally:
        store.close()


class StrandingIndex:
    """Stands in for a usearch index after a parallel add left keys 3 and 5 unreachable (unum-cloud/USearch#735)."""

    def __init__(self) -> None:
        self.expansion_search = 128
        self.searched_at: list[int] = []
        self.calls: list[tuple[str, list[int], int]] = []

    def search(self, vectors: Vector, count: int, threads: int) -> SimpleNamespace:
        self.searched_at.append(self.expansion_search)
        keys = np.arange(len(vectors), dtype=np.uint64)
        keys[[3, 5]] = 0  # found something else
        return SimpleNamespace(keys=np.repeat(keys[:, None], count, axis=1))

    def remove(self, keys: Keys) -> None:
        self.calls.append(("remove", keys.tolist(), 0))

    def add(self, keys: Keys, vectors: Vector, threads: int) -> None:
        self.calls.append(("add", keys.tolist(), threads))


def test_vectors_a_parallel_add_left_unreachable_are_added_again_on_one_thread() -> None:
    index = StrandingIndex()
    keys = np.arange(8, dtype=np.uint64)
    vectors = np.random.default_rng(1).standard_normal((8, SMALL_DIM)).astype(np.float32)
    assert _relink_unreachable(index, keys, vectors, threads=2) == 2  # type: ignore[arg-type]
    assert index.searched_at == [embedded._SELF_CHECK_BREADTH] and index.expansion_search == 128
    assert index.calls == [("remove", [3, 5], 0), ("add", [3, 5], 1)]


class HashEmbedder:
    """Instant, deterministic vectors: the ingestor's batching without the model's time."""

    name = "hash"
    model_id = "hash-16"
    dim = SMALL_DIM

    def embed_passages(self, texts: list[str]) -> Vector:
        rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(SMALL_DIM) for t in texts]
        matrix = np.asarray(rows, dtype=np.float32)
        normalised: Vector = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return normalised

    def embed_query(self, text: str) -> Vector:
        return self.embed_passages([text])[0]


class RecordingStore(EmbeddedStore):
    """The embedded store, noting each write's documents; refuses any document whose source names `refuse`."""

    refuse = "never"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, SMALL_DIM, HashEmbedder.model_id)
        self.writes: list[list[str]] = []

    def replace_documents(self, replacements: list[Replacement]) -> None:  # type: ignore[override]
        self.writes.append([r.record.source for r in replacements])
        if any(self.refuse in r.record.source for r in replacements):
            raise StoreError(f"refused {self.refuse}")
        super().replace_documents(replacements)


def folder(tmp_path: Path, files: int) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(files):
        paragraphs = [f"Policy {i}, section {s}: " + "words of the policy " * 30 for s in range(6)]
        (root / f"policy{i:02d}.md").write_text("\n\n".join(paragraphs))
    return root


def test_a_fast_embedder_fills_one_write_and_a_slow_one_writes_each_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _ = collect([folder(tmp_path, 40)])
    fast = RecordingStore(tmp_path / "fast")
    try:
        report = Ingestor(KnowledgeSettings(), HashEmbedder(), fast).ingest_files(files)
        assert report.count("added") == 40 and report.chunks_written > ingest.GROUP_CHUNKS
        assert [len(w) for w in fast.writes] == [40], "one write for the folder"
    finally:
        fast.close()
    # An embedder slower than WRITE_AFTER_SECONDS per group: each group is written as soon as it is embedded.
    monkeypatch.setattr(ingest, "WRITE_AFTER_SECONDS", 0.0)
    slow = RecordingStore(tmp_path / "slow")
    try:
        report = Ingestor(KnowledgeSettings(), HashEmbedder(), slow).ingest_files(files)
        assert report.count("added") == 40
        assert len(slow.writes) > 1 and sum(len(w) for w in slow.writes) == 40
        assert slow.count_chunks() == report.chunks_written
    finally:
        slow.close()


def test_a_document_the_store_refuses_in_a_batch_fails_alone(tmp_path: Path) -> None:
    files, _ = collect([folder(tmp_path, 5)])
    store = RecordingStore(tmp_path / "store")
    store.refuse = "policy03"
    try:
        report = Ingestor(KnowledgeSettings(), HashEmbedder(), store).ingest_files(files)
        [failed] = [o for o in report.outcomes if o.status == "failed"]
        assert failed.reason == "docs/policy03.md: refused policy03"
        assert report.count("added") == 4
        assert sorted(d.source for d in store.list_documents()) == [f"docs/policy0{i}.md" for i in (0, 1, 2, 4)]
    finally:
        store.close()
