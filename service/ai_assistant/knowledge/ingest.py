"""Ingestion: files or uploads -> parse -> chunk -> embed -> store; each document is replaced atomically.

A file whose bytes (and the pipeline that turns them into chunks) did not change is skipped without parsing or
embedding. A file that cannot be read or parsed is reported on one line and skipped; what is stored stays as it was.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .chunking import chunk_text, embedding_text
from .embedders import Embedder
from .errors import KnowledgeError, ParseError
from .parsers import parse
from .settings import KnowledgeSettings
from .stores.base import Chunk, DocumentRecord, Replacement, ReplacesMany, Vector, VectorStore, doc_id_for

log = logging.getLogger(__name__)

# Bump when parsing or chunking changes meaning: every document is then re-chunked on its next ingest.
PIPELINE_VERSION = "2"

# Chunks of several small documents are embedded together up to this many (memory stays ~100 KB of text).
GROUP_CHUNKS = 128

# Embedded documents are written to the store together, up to this many chunks or once the batch has taken
# WRITE_AFTER_SECONDS to gather: one transaction and one index add in the embedded store, on the idle cores from 1,024
# chunks (docs/benchmarks.md, "Parallel insert of a batch of documents"). With the model on CPU (~7 chunks/s) a group
# takes longer than that to embed, so every group is written as soon as it is embedded, as before; with a fast embedder
# (TEI on a GPU, precomputed vectors) the batches grow, and a crash loses at most that much embedding work.
WRITE_CHUNKS = 4096
WRITE_AFTER_SECONDS = 2.0

Status = Literal["added", "updated", "unchanged", "skipped", "failed"]
ProgressCallback = Callable[[str, int, int], None]  # (source, chunks embedded so far, chunks in this document)


@dataclass(frozen=True)
class Outcome:
    source: str
    status: Status
    doc_id: str = ""
    chunks: int = 0
    reason: str = ""

    def line(self) -> str:
        if self.status in ("skipped", "failed"):
            return f"{self.status}: {self.reason}"
        return f"{self.status}: {self.source} ({self.chunks} chunks)"


@dataclass
class IngestReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        return not any(o.status in ("skipped", "failed") for o in self.outcomes)

    @property
    def chunks_written(self) -> int:
        return sum(o.chunks for o in self.outcomes if o.status in ("added", "updated"))

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("added", "updated", "unchanged", "skipped", "failed")]
        return ", ".join(parts) + f"; {self.chunks_written} chunks written"


@dataclass(frozen=True)
class Prepared:
    """A parsed and chunked document waiting for its vectors."""

    record: DocumentRecord
    chunks: list[Chunk]
    replaces: bool  # an older version is stored


@dataclass(frozen=True)
class SourceFile:
    path: Path
    source: str  # what the store and the sources footer call it: "<folder>/<relative path>" or the file name
    url: str | None = None


def collect(paths: Iterable[Path], base_url: str | None = None) -> tuple[list[SourceFile], list[Outcome]]:
    """Files to ingest, in a stable order. Folders are walked recursively; hidden files and folders are left out."""
    files: list[SourceFile] = []
    problems: list[Outcome] = []
    for path in paths:
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                rel = item.relative_to(path)
                if item.is_dir() or any(part.startswith(".") for part in rel.parts):
                    continue
                source = f"{path.resolve().name}/{rel.as_posix()}"
                url = f"{base_url.rstrip('/')}/{rel.as_posix()}" if base_url else None
                files.append(SourceFile(item, source, url))
        elif path.is_file():
            url = f"{base_url.rstrip('/')}/{path.name}" if base_url else None
            files.append(SourceFile(path, path.name, url))
        else:
            problems.append(Outcome(str(path), "skipped", reason=f"{path}: no such file or folder"))
    return files, problems


class Ingestor:
    def __init__(self, settings: KnowledgeSettings, embedder: Embedder, store: VectorStore) -> None:
        self.settings, self.embedder, self.store = settings, embedder, store

    def _content_hash(self, data: bytes) -> str:
        digest = hashlib.sha256()
        for part in (PIPELINE_VERSION, self.embedder.model_id, str(self.settings.chunk_max_chars)):
            digest.update(part.encode() + b"\0")
        digest.update(data)
        return digest.hexdigest()

    def prepare(
        self, data: bytes, name: str, *, source: str | None = None, url: str | None = None, title: str | None = None
    ) -> Outcome | Prepared:
        """Everything before embedding: size limit, unchanged check, parse, chunk. An Outcome means nothing to do."""
        source = source or name
        doc_id = doc_id_for(source)
        if len(data) > self.settings.max_file_bytes:
            limit = self.settings.max_file_bytes
            reason = f"{source}: {len(data)} bytes, over the {limit}-byte limit"
            return Outcome(source, "skipped", doc_id, reason=reason)
        content_hash = self._content_hash(data)
        existing = self.store.get_document(doc_id)
        same_title = title is None or (existing is not None and title == existing.title)
        if existing is not None and existing.content_hash == content_hash and same_title:
            return Outcome(source, "unchanged", doc_id, existing.chunks)
        try:
            parsed = parse(data, name)
        except ParseError as exc:
            return Outcome(source, "skipped", doc_id, reason=f"{source}: {exc.problem}")
        doc_title = title or parsed.title
        link = url or parsed.url or ""
        chunks = chunk_text(
            parsed.text,
            doc_id=doc_id,
            title=doc_title,
            source=source,
            url=link,
            max_chars=self.settings.chunk_max_chars,
        )
        if not chunks:
            return Outcome(source, "skipped", doc_id, reason=f"{source}: no text to index")
        record = DocumentRecord(doc_id, doc_title, source, link, content_hash, len(chunks), len(data), time.time())
        return Prepared(record, chunks, existing is not None)

    def commit(self, group: list[Prepared], progress: ProgressCallback | None = None) -> list[Outcome]:
        """Embed the chunks of several documents in shared batches (small documents alone would leave the model's
        threads idle), then store them (`write`)."""
        try:
            vectors = self.embed(group, progress)
        except KnowledgeError as exc:
            return _failed(group, exc)
        return self.write(group, vectors)

    def embed(self, group: list[Prepared], progress: ProgressCallback | None = None) -> Vector:
        """The vectors of every chunk of `group`, in order; raises KnowledgeError when the embedder fails."""
        texts = [embedding_text(c) for doc in group for c in doc.chunks]
        label = group[0].record.source + (f" (+{len(group) - 1} more)" if len(group) > 1 else "")
        batch = self.settings.embedder.batch_size
        parts = []
        for start in range(0, len(texts), batch):
            parts.append(self.embedder.embed_passages(texts[start : start + batch]))
            if progress:
                progress(label, min(start + batch, len(texts)), len(texts))
        return np.vstack(parts)

    def write(self, group: list[Prepared], vectors: Vector) -> list[Outcome]:
        """Store each document of `group` with its rows of `vectors`: all in one step where the store can
        (`ReplacesMany`), else one by one. If the one step fails, each document is tried on its own, so that a
        document the store refuses fails alone, as it does one by one."""
        replacements = []
        offset = 0
        for doc in group:
            replacements.append(Replacement(doc.record, doc.chunks, vectors[offset : offset + len(doc.chunks)]))
            offset += len(doc.chunks)
        if len(replacements) > 1 and isinstance(self.store, ReplacesMany):
            try:
                self.store.replace_documents(replacements)
                return [_stored(doc) for doc in group]
            except KnowledgeError as exc:
                log.warning("knowledge ingest: writing %d documents together failed (%s); one by one", len(group), exc)
        outcomes = []
        for doc, replacement in zip(group, replacements, strict=True):
            try:
                self.store.replace_document(replacement.record, replacement.chunks, replacement.vectors)
                outcomes.append(_stored(doc))
            except KnowledgeError as exc:
                reason = f"{doc.record.source}: {exc}"
                outcomes.append(Outcome(doc.record.source, "failed", doc.record.doc_id, reason=reason))
        return outcomes

    def ingest_bytes(
        self,
        data: bytes,
        name: str,
        *,
        source: str | None = None,
        url: str | None = None,
        title: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Outcome:
        """One document. `name` decides the parser (by extension); `source` (default `name`) is its identity."""
        prepared = self.prepare(data, name, source=source, url=url, title=title)
        if isinstance(prepared, Outcome):
            return prepared
        return self.commit([prepared], progress)[0]

    def ingest_files(
        self,
        files: list[SourceFile],
        *,
        on_file: Callable[[SourceFile], None] | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        report = IngestReport()
        slots: list[Outcome | None] = []
        group: list[tuple[int, Prepared]] = []  # parsed, waiting for the embedder
        group_chunks = 0
        embedded: list[tuple[int, Prepared]] = []  # embedded, waiting to be written together
        embedded_vectors: list[Vector] = []
        embedded_chunks = 0
        gathering_since = 0.0  # when the first of `embedded` began embedding

        def write_embedded() -> None:
            nonlocal embedded_chunks
            if embedded:
                outcomes = self.write([p for _, p in embedded], np.vstack(embedded_vectors))
                for (slot, _), outcome in zip(embedded, outcomes, strict=True):
                    slots[slot] = outcome
                embedded.clear()
                embedded_vectors.clear()
                embedded_chunks = 0

        def embed_group() -> None:
            nonlocal group_chunks, embedded_chunks, gathering_since
            if not group:
                return
            docs = [p for _, p in group]
            started = time.monotonic()
            try:
                vectors = self.embed(docs, progress)
            except KnowledgeError as exc:
                for (slot, _), outcome in zip(group, _failed(docs, exc), strict=True):
                    slots[slot] = outcome
            else:
                if not embedded:
                    gathering_since = started
                embedded.extend(group)
                embedded_vectors.append(vectors)
                embedded_chunks += group_chunks
                if embedded_chunks >= WRITE_CHUNKS or time.monotonic() - gathering_since >= WRITE_AFTER_SECONDS:
                    write_embedded()
            group.clear()
            group_chunks = 0

        for file in files:
            if on_file:
                on_file(file)
            try:
                data = file.path.read_bytes()
            except OSError as exc:
                slots.append(
                    Outcome(file.source, "skipped", reason=f"{file.path}: cannot be read ({exc.strerror or exc})")
                )
                continue
            prepared = self.prepare(data, file.path.name, source=file.source, url=file.url)
            if isinstance(prepared, Outcome):
                slots.append(prepared)
                continue
            slots.append(None)
            group.append((len(slots) - 1, prepared))
            group_chunks += len(prepared.chunks)
            if group_chunks >= GROUP_CHUNKS:
                embed_group()
        embed_group()
        write_embedded()
        for outcome in slots:
            assert outcome is not None
            if outcome.status in ("skipped", "failed"):
                log.warning("knowledge ingest %s", outcome.line())
            report.outcomes.append(outcome)
        self.store.flush()
        return report


def _stored(doc: Prepared) -> Outcome:
    return Outcome(doc.record.source, "updated" if doc.replaces else "added", doc.record.doc_id, len(doc.chunks))


def _failed(group: list[Prepared], exc: KnowledgeError) -> list[Outcome]:
    return [Outcome(d.record.source, "failed", d.record.doc_id, reason=f"{d.record.source}: {exc}") for d in group]
