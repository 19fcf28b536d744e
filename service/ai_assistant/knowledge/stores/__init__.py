"""Vector stores behind one interface (`base.VectorStore`): `embedded` (default, in-process) and `weaviate`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..settings import KnowledgeSettings
from .base import Chunk, DocumentRecord, Hit, VectorStore, doc_id_for

StoreFactory = Callable[[KnowledgeSettings, Path, int, str], VectorStore]


def embedded_store(settings: KnowledgeSettings, data_dir: Path, dim: int, model_id: str) -> VectorStore:
    from .embedded import EmbeddedStore

    return EmbeddedStore.from_settings(settings, data_dir, dim, model_id)


def weaviate_store(settings: KnowledgeSettings, data_dir: Path, dim: int, model_id: str) -> VectorStore:
    from .weaviate import WeaviateStore

    return WeaviateStore.from_settings(settings, data_dir, dim, model_id)


BUILTIN: dict[str, StoreFactory] = {"embedded": embedded_store, "weaviate": weaviate_store}

__all__ = ["BUILTIN", "Chunk", "DocumentRecord", "Hit", "VectorStore", "doc_id_for"]
