"""The one interface every vector store implements, and the small records that cross it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def doc_id_for(source: str) -> str:
    """Stable id of a document: the same source (relative path or URL) is the same document across re-ingests."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    position: int  # 0-based order inside the document
    title: str  # the document's title
    source: str  # "<folder>/<relative path>", the file name, or the upload's name: the document's identity
    url: str  # link for the sources footer ("" when none: the footer then shows `source`)
    heading: str  # heading path inside the document, "Leave > Annual leave"; "" before the first heading
    text: str
    content_hash: str  # sha256 of `text`

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_id}:{self.position}:{self.content_hash[:12]}"

    @property
    def location(self) -> str:
        return self.url or self.source


@dataclass(frozen=True)
class DocumentRecord:
    doc_id: str
    title: str
    source: str
    url: str
    content_hash: str  # sha256 of the file bytes plus the pipeline version: unchanged -> nothing to do
    chunks: int
    size_bytes: int
    ingested_at: float  # unix seconds


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # cosine similarity in [-1, 1], comparable across stores


@dataclass(frozen=True)
class Replacement:
    """A document's new version: its record, its chunks and their vectors (row i embeds chunks[i])."""

    record: DocumentRecord
    chunks: list[Chunk]
    vectors: Vector


@runtime_checkable
class VectorStore(Protocol):
    """Synchronous on purpose: `KnowledgeBase` runs every call in a worker thread, so stores stay simple."""

    name: str

    def get_document(self, doc_id: str) -> DocumentRecord | None: ...

    def list_documents(self) -> list[DocumentRecord]: ...

    def replace_document(self, doc: DocumentRecord, chunks: list[Chunk], vectors: Vector) -> None:
        """Store `doc` with exactly these chunks, dropping its previous chunks. Readers see old or new, never a mix
        (Weaviate: new chunks are written before the old ones go, so a reader may briefly see both, never neither)."""
        ...

    def delete_document(self, doc_id: str) -> bool: ...

    def search(self, vector: Vector, k: int, query_text: str | None = None) -> list[Hit]:
        """Top `k` chunks by similarity, best first. `query_text` lets a store add keyword (BM25) ranking."""
        ...

    def count_chunks(self) -> int: ...

    def flush(self) -> None:
        """Make everything written so far durable (the embedded store persists its index lazily)."""
        ...

    def backup(self, destination: str) -> str:
        """Write a consistent backup; returns where it went (a file path or a backup id)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReplacesMany(Protocol):
    """A store that writes several documents in one step (the embedded store: one transaction and one index add).
    Optional, so that a store from an entry point without it still works: the ingestor then writes each document
    with `replace_document`."""

    def replace_documents(self, replacements: Sequence[Replacement]) -> None:
        """`replace_document` for each, as one change: readers see all the old versions or all the new ones. A doc_id
        given twice ends as its last version, as if they had been written one after the other."""
        ...


def as_matrix(vectors: Vector, dim: int, what: str) -> Vector:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"{what}: expected vectors of shape (n, {dim}), got {matrix.shape}")
    return matrix


def state_dir(data_dir: Path) -> Path:
    path = data_dir / "knowledge"
    path.mkdir(parents=True, exist_ok=True)
    return path
