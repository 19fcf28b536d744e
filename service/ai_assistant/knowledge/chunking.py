"""Split a parsed document (Markdown-shaped text) into chunks that respect headings, paragraphs and sentence ends.

Rules, in order: a heading always starts a new chunk and names it; paragraphs (blank-line separated) are packed into
a chunk until the size limit; a paragraph over the limit is split at sentence ends, Chinese (。！？；…) as well as
Latin (. ! ? followed by a space); only a single sentence over the limit is cut hard. Size is weighted so that a CJK
character counts as 3 (E5's tokenizer gives about one token per CJK character and one per ~4 Latin characters, and the
model reads at most 512 tokens).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .stores.base import Chunk

CJK_WEIGHT = 3
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# A sentence ends after CJK terminal punctuation (no space needed) or after Latin terminal punctuation plus space.
_SENTENCE_END = re.compile(r"(?<=[。！？；…])|(?<=[.!?;])\s+")


def weight(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return len(text) + (CJK_WEIGHT - 1) * cjk


@dataclass(frozen=True)
class Section:
    heading: str  # "A > B"
    paragraphs: tuple[str, ...]


def sections(text: str) -> Iterator[Section]:
    """Markdown headings open sections; paragraphs are blank-line separated blocks (fenced code kept whole)."""
    stack: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    block: list[str] = []
    in_fence = False

    def heading_path() -> str:
        return " > ".join(title for _, title in stack)

    def end_block() -> None:
        if block:
            para = "\n".join(block).strip()
            if para:
                paragraphs.append(para)
            block.clear()

    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            block.append(line)
            continue
        if not in_fence:
            match = _HEADING.match(stripped)
            if match:
                end_block()
                if paragraphs:
                    yield Section(current, tuple(paragraphs))
                    paragraphs = []
                level = len(match.group(1))
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, match.group(2).strip()))
                current = heading_path()
                continue
            if not stripped:
                end_block()
                continue
        block.append(line.rstrip())
    end_block()
    if paragraphs:
        yield Section(current, tuple(paragraphs))


def split_sentences(paragraph: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(paragraph)) if s]


def _hard_split(sentence: str, limit: int) -> Iterator[str]:
    piece = ""
    for ch in sentence:
        if piece and weight(piece + ch) > limit:
            yield piece
            piece = ""
        piece += ch
    if piece:
        yield piece


def _pieces(paragraph: str, limit: int) -> Iterator[str]:
    """A paragraph, or if it is too long, runs of whole sentences that fit."""
    if weight(paragraph) <= limit:
        yield paragraph
        return
    run = ""
    for sentence in split_sentences(paragraph):
        for part in _hard_split(sentence, limit) if weight(sentence) > limit else (sentence,):
            joined = _join(run, part, sep=" ")
            if run and weight(joined) > limit:
                yield run
                run = part
            else:
                run = joined
    if run:
        yield run


def _join(a: str, b: str, sep: str) -> str:
    if not a:
        return b
    # No space between CJK sentences: "。" already separates them.
    if _CJK.match(a[-1:]) or _CJK.match(b[:1]):
        sep = "" if sep == " " else sep
    return f"{a}{sep}{b}"


def chunk_text(text: str, *, doc_id: str, title: str, source: str, url: str = "", max_chars: int = 900) -> list[Chunk]:
    chunks: list[Chunk] = []

    def emit(heading: str, body: str) -> None:
        body = body.strip()
        if body:
            digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
            chunks.append(Chunk(doc_id, len(chunks), title, source, url, heading, body, digest))

    for section in sections(text):
        current = ""
        for paragraph in section.paragraphs:
            for piece in _pieces(paragraph, max_chars):
                joined = _join(current, piece, sep="\n\n")
                if current and weight(joined) > max_chars:
                    emit(section.heading, current)
                    current = piece
                else:
                    current = joined
        emit(section.heading, current)
    return chunks


def embedding_text(chunk: Chunk) -> str:
    """What the model reads: the title and heading path give a short chunk its context ("Annual leave" alone is
    ambiguous; "Leave policy > Annual leave" is not)."""
    parts = [chunk.title] if chunk.title and not chunk.heading.startswith(chunk.title) else []
    if chunk.heading:
        parts.append(chunk.heading)
    head = " > ".join(parts)
    return f"{head}\n{chunk.text}" if head else chunk.text
