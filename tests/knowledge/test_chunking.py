"""Chunking respects headings, paragraphs and sentence ends (Chinese and Latin), and keeps what each chunk needs."""

from __future__ import annotations

import hashlib

from ai_assistant.knowledge.chunking import chunk_text, embedding_text, sections, split_sentences, weight


def chunks_of(text: str, max_chars: int = 900) -> list:
    return chunk_text(text, doc_id="d1", title="Handbook", source="docs/handbook.md", max_chars=max_chars)


def test_headings_start_chunks_and_name_them() -> None:
    text = (
        "# Handbook\n\nIntro.\n\n## Leave\n\nAnnual leave is 10 days.\n\n"
        "### Sick\n\nCall your manager.\n\n## VPN\n\nUse it."
    )
    chunks = chunks_of(text)
    assert [c.heading for c in chunks] == ["Handbook", "Handbook > Leave", "Handbook > Leave > Sick", "Handbook > VPN"]
    assert [c.text for c in chunks] == ["Intro.", "Annual leave is 10 days.", "Call your manager.", "Use it."]


def test_each_chunk_keeps_document_id_title_source_position_and_hash() -> None:
    chunks = chunk_text("# T\n\nOne.\n\n# U\n\nTwo.", doc_id="abc", title="Doc", source="x/y.md", url="https://w/y")
    assert [c.position for c in chunks] == [0, 1]
    for c in chunks:
        assert (c.doc_id, c.title, c.source, c.url) == ("abc", "Doc", "x/y.md", "https://w/y")
        assert c.content_hash == hashlib.sha256(c.text.encode()).hexdigest()
    assert chunks[0].chunk_id != chunks[1].chunk_id


def test_small_paragraphs_are_packed_together_up_to_the_limit() -> None:
    paragraphs = [f"Paragraph number {i} has a few words." for i in range(20)]
    chunks = chunks_of("\n\n".join(paragraphs), max_chars=200)
    assert len(chunks) > 1
    assert all(weight(c.text) <= 200 for c in chunks)
    # No paragraph is cut: every paragraph appears whole in exactly one chunk.
    for p in paragraphs:
        assert sum(p in c.text for c in chunks) == 1


def test_chinese_paragraph_splits_at_sentence_ends_not_mid_sentence() -> None:
    sentence = "员工入职满一年后享有带薪年假，年假可以分次休。"
    paragraph = sentence * 30  # 690 CJK characters, weight 2070
    chunks = chunks_of(paragraph, max_chars=300)
    assert len(chunks) > 1
    for c in chunks:
        assert weight(c.text) <= 300
        assert c.text.endswith("。"), c.text[-10:]
    assert "".join(c.text for c in chunks) == paragraph


def test_cjk_characters_weigh_more_than_latin_ones() -> None:
    assert weight("abc") == 3
    assert weight("年假") == 6


def test_sentence_split_handles_both_scripts() -> None:
    assert split_sentences("第一句。第二句！Third one. Fourth? 第五句；") == [
        "第一句。",
        "第二句！",
        "Third one.",
        "Fourth?",
        "第五句；",
    ]


def test_a_single_sentence_over_the_limit_is_cut_hard_without_losing_text() -> None:
    long_word = "x" * 1000
    chunks = chunks_of(long_word, max_chars=300)
    assert "".join(c.text for c in chunks) == long_word
    assert all(weight(c.text) <= 300 for c in chunks)


def test_fenced_code_is_not_split_at_blank_lines_or_read_as_headings() -> None:
    text = "# Setup\n\n```\n# not a heading\n\nstill code\n```\n\nAfter."
    [section] = list(sections(text))
    assert section.heading == "Setup"
    assert section.paragraphs[0].startswith("```") and "still code" in section.paragraphs[0]


def test_empty_text_gives_no_chunks() -> None:
    assert chunks_of("\n\n   \n") == []


def test_embedding_text_prefixes_title_and_heading_once() -> None:
    [chunk] = chunk_text("## Annual leave\n\n10 days.", doc_id="d", title="Leave policy", source="s")
    assert embedding_text(chunk) == "Leave policy > Annual leave\n10 days."
    [chunk] = chunk_text("# Leave policy\n\n10 days.", doc_id="d", title="Leave policy", source="s")
    assert embedding_text(chunk) == "Leave policy\n10 days."
