"""Split long answers under a platform's size limit without breaking a UTF-8 character or a Markdown code block."""

from __future__ import annotations

from collections.abc import Callable

Measure = Callable[[str], int]


def chars(text: str) -> int:
    return len(text)


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def utf16_units(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


_FENCE = "```"


def split_text(text: str, limit: int, measure: Measure = chars) -> list[str]:
    """Pieces of `text`, each with measure(piece) <= limit.

    Cuts prefer paragraph breaks, then line breaks, then sentence ends (Latin and CJK), then spaces, then any
    character boundary (never inside a code point, since we cut str, not bytes). A cut inside a fenced code block
    closes the fence in this piece and reopens it, with its language tag, at the start of the next one.
    """
    if limit < 16:
        raise ValueError("limit too small to split sensibly")
    if measure(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    rest = text
    reopen = ""
    while rest:
        candidate = reopen + rest
        if measure(candidate) <= limit:
            parts.append(candidate)
            break
        budget = limit - measure(_FENCE) - 1  # room to close a fence if we end inside one
        cut = _best_cut(candidate, budget, measure)
        if cut <= len(reopen):  # a single unbreakable run: take what fits
            cut = len(reopen) + 1
        piece, rest = candidate[:cut], candidate[cut:]
        fence_lang = _open_fence(piece)
        if fence_lang is not None:
            piece = piece.rstrip("\n") + "\n" + _FENCE
            reopen = _FENCE + fence_lang + "\n"
        else:
            reopen = ""
        parts.append(piece.rstrip() if fence_lang is None else piece)
        rest = rest.lstrip("\n") if fence_lang is None else rest
    return [p for p in parts if p.strip()]


def _fits(text: str, n: int, budget: int, measure: Measure) -> bool:
    return measure(text[:n]) <= budget


def _max_prefix(text: str, budget: int, measure: Measure) -> int:
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on the number of characters that fit
        mid = (lo + hi + 1) // 2
        if _fits(text, mid, budget, measure):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _best_cut(text: str, budget: int, measure: Measure) -> int:
    n = _max_prefix(text, budget, measure)
    window = text[:n]
    floor = n // 2  # do not make tiny pieces just to cut at a nicer place
    for sep in ("\n\n", "\n", "。", "！", "？", ". ", "! ", "? ", "；", "; ", "，", ", ", " "):
        i = window.rfind(sep)
        if i >= floor:
            return i + len(sep)
    return n


def _open_fence(piece: str) -> str | None:
    """The language tag of a code fence left open at the end of `piece`, or None if all fences are closed."""
    lang: str | None = None
    for line in piece.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            lang = stripped[3:].strip() if lang is None else None
    return lang
