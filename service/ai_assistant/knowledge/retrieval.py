"""`KnowledgeBase`: the one object the service and the CLI hold. It owns an embedder and a vector store.

Embedding and store calls are CPU-bound or blocking, so every async method runs them in a worker thread
(anyio.to_thread) and the event loop stays free for webhooks. The `*_sync` methods are for the CLI and the benchmark.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from ..errors import ConfigError
from . import embedders as embedders_mod
from . import stores as stores_mod
from .calibration import background_offset
from .embedders import Embedder
from .ingest import Ingestor, IngestReport, Outcome, ProgressCallback, SourceFile, collect
from .metrics import KB_CHUNKS, KB_QUERIES, KB_RETRIEVAL_DURATION
from .settings import KnowledgeSettings
from .stores.base import DocumentRecord, Hit, VectorStore, doc_id_for

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["Hit", "KnowledgeBase"]


def _factory(kind: str, name: str, builtin: dict[str, Any]) -> Callable[..., Any]:
    if name in builtin:
        return builtin[name]  # type: ignore[no-any-return]
    from ..registry import Kind, default_registry

    registry_kind = Kind.EMBEDDER if kind == "embedder" else Kind.VECTOR_STORE
    try:
        return default_registry().get(registry_kind, name)
    except LookupError:
        known = sorted({*builtin, *default_registry().names(registry_kind)})
        problem = f"unknown {kind} {name!r}; known: {known}"
        raise ConfigError("assistant.yaml", f"knowledge.{kind}.name", problem) from None


class KnowledgeBase:
    def __init__(self, settings: KnowledgeSettings, embedder: Embedder, store: VectorStore) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.ingestor = Ingestor(settings, embedder, store)
        KB_CHUNKS.set(store.count_chunks())

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings, data_dir: Path) -> KnowledgeBase:
        embedder_factory = _factory("embedder", settings.embedder.name, embedders_mod.BUILTIN)
        store_factory = _factory("store", settings.store.name, stores_mod.BUILTIN)
        embedder: Embedder = embedder_factory(settings, data_dir)
        store: VectorStore = store_factory(settings, data_dir, embedder.dim, embedder.model_id)
        return cls(settings, embedder, store)

    @staticmethod
    async def _thread(fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn)

    # -- search ----------------------------------------------------------------------------------------------------
    def search_sync(self, query: str, k: int | None = None, min_score: float | None = None) -> list[Hit]:
        """Top chunks whose calibrated score (cosine minus the query's background similarity, see calibration.py)
        is at least `min_score` (default: the configured one), best first; [] when nothing relevant was found."""
        query = query.strip()
        if not query:
            return []
        threshold = self.settings.min_score if min_score is None else min_score
        started = time.perf_counter()
        vector = self.embedder.embed_query(query)
        offset = background_offset(self.embedder, vector)
        hits = self.store.search(vector, k or self.settings.top_k, query_text=query)
        KB_RETRIEVAL_DURATION.observe(time.perf_counter() - started)
        relevant = [replace(h, score=h.score - offset) for h in hits if h.score - offset >= threshold]
        KB_QUERIES.labels(outcome="hit" if relevant else "miss").inc()
        return relevant

    async def search(self, query: str, k: int | None = None) -> list[Hit]:
        return await self._thread(partial(self.search_sync, query, k))

    # -- ingest / list / delete ----------------------------------------------------------------------------------
    def ingest_sync(
        self,
        paths: list[Path],
        *,
        base_url: str | None = None,
        on_file: Callable[[SourceFile], None] | None = None,
        progress: ProgressCallback | None = None,
        files: list[SourceFile] | None = None,
    ) -> IngestReport:
        if files is None:
            files, problems = collect(paths, base_url)
        else:
            problems = []
        report = self.ingestor.ingest_files(files, on_file=on_file, progress=progress)
        report.outcomes[:0] = problems
        KB_CHUNKS.set(self.store.count_chunks())
        return report

    async def ingest(self, paths: list[Path], *, base_url: str | None = None) -> IngestReport:
        return await self._thread(partial(self.ingest_sync, paths, base_url=base_url))

    def ingest_bytes_sync(
        self, data: bytes, filename: str, *, source: str | None = None, url: str | None = None, title: str | None = None
    ) -> Outcome:
        outcome = self.ingestor.ingest_bytes(data, filename, source=source, url=url, title=title)
        self.store.flush()
        KB_CHUNKS.set(self.store.count_chunks())
        return outcome

    async def ingest_bytes(
        self, data: bytes, filename: str, *, source: str | None = None, url: str | None = None, title: str | None = None
    ) -> Outcome:
        return await self._thread(partial(self.ingest_bytes_sync, data, filename, source=source, url=url, title=title))

    def list_documents_sync(self) -> list[DocumentRecord]:
        return self.store.list_documents()

    async def list_documents(self) -> list[DocumentRecord]:
        return await self._thread(self.list_documents_sync)

    def find_document(self, ref: str) -> DocumentRecord | None:
        """A document by id, by source (as listed) or by the URL/path it was ingested under."""
        for candidate in (ref, doc_id_for(ref)):
            doc = self.store.get_document(candidate)
            if doc is not None:
                return doc
        return next((d for d in self.store.list_documents() if ref in (d.source, d.title)), None)

    def delete_sync(self, ref: str) -> DocumentRecord | None:
        doc = self.find_document(ref)
        if doc is None:
            return None
        self.store.delete_document(doc.doc_id)
        self.store.flush()
        KB_CHUNKS.set(self.store.count_chunks())
        return doc

    async def delete(self, ref: str) -> DocumentRecord | None:
        return await self._thread(partial(self.delete_sync, ref))

    # -- version (the answer cache's key) ------------------------------------------------------------------------
    def version_sync(self) -> str:
        """Changes whenever a document is added, replaced or deleted. A store with a counter of its own (the
        embedded store's generation) answers directly; for any other the listing of documents is digested."""
        counter = getattr(self.store, "version", None)
        if callable(counter):
            return f"g{counter()}"
        digest = hashlib.sha256()
        for doc in sorted(self.store.list_documents(), key=lambda d: d.doc_id):
            digest.update(f"{doc.doc_id}\0{doc.content_hash}\0{doc.title}\0{doc.ingested_at}\n".encode())
        return "d" + digest.hexdigest()[:16]

    async def version(self) -> str:
        return await self._thread(self.version_sync)

    def backup_sync(self, destination: str) -> str:
        self.store.flush()
        return self.store.backup(destination)

    def ingest_sample_corpus(self, root: Path | None = None) -> IngestReport | None:
        """`make up`: the sample corpus shipped in the repo (idempotent: unchanged files cost a hash each). A relative
        `sample_corpus` is taken relative to `root` (the config dir)."""
        corpus = self.settings.sample_corpus
        if corpus is None:
            return None
        path = corpus if corpus.is_absolute() or root is None else root / corpus
        if not path.is_dir():
            log.warning("knowledge sample corpus %s not found; skipped", path)
            return None
        report = self.ingest_sync([path])
        log.info("knowledge sample corpus %s: %s", path, report.summary())
        return report

    def close(self) -> None:
        self.store.close()
