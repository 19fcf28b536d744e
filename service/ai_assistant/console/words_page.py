"""Sensitive words: view and edit the filter's word list (filters.words_file), with a tester.

A save is validated whole, written atomically (a temporary file in the same folder, then rename), audit-logged with the
words added and removed, and applied to the running service at once: the pipeline's filters are swapped for ones built
from the saved file, which is safe because each message reads its filter once per step and a filter never changes.
Where the file is read-only to the service (the assistant role writes it root-owned from assistant_sensitive_words),
the page refuses edits and says where to change the list instead."""

from __future__ import annotations

import unicodedata

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..pipeline.filters import SensitiveWordFilter
from .store import User
from .web import PREFIX, Console

MAX_WORDS = 20_000
MAX_WORD_CHARS = 100
MAX_TEST_CHARS = 4000
AUDIT_WORDS = 50  # the audit entry lists at most this many added/removed words, then counts


def words_of(text: str) -> list[str]:
    """The words the filter would use: non-comment lines, stripped and lower-cased (as SensitiveWordFilter)."""
    return sorted({ln.strip().lower() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")})


def problem_of(text: str) -> str | None:
    lines = text.splitlines()
    if len(lines) > MAX_WORDS:
        return f"{len(lines)} lines; at most {MAX_WORDS}"
    for number, line in enumerate(lines, 1):
        word = line.strip()
        if len(word) > MAX_WORD_CHARS:
            return f"line {number}: longer than {MAX_WORD_CHARS} characters"
        if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") for c in word):
            return f"line {number}: contains a control or invisible character"
        if word and not word.startswith("#") and len(word) < 2 and not _is_cjk(word):
            # a one-letter word would mask every 'a' or 'i' in every answer
            return f"line {number}: {word!r} is a single character; the filter would hit almost every message"
    return None


def _is_cjk(word: str) -> bool:
    return all(unicodedata.east_asian_width(c) in ("W", "F") for c in word)


def _changes(before: list[str], after: list[str]) -> dict[str, object]:
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    return {
        "words": len(after),
        "added": added[:AUDIT_WORDS],
        "removed": removed[:AUDIT_WORDS],
        **({"added_more": len(added) - AUDIT_WORDS} if len(added) > AUDIT_WORDS else {}),
        **({"removed_more": len(removed) - AUDIT_WORDS} if len(removed) > AUDIT_WORDS else {}),
    }


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    words = console.deps.words

    async def page(request: Request, user: User, status: int = 200, **extra: object) -> Response:
        text = extra.pop("text", None)
        current = await anyio.to_thread.run_sync(words.read) if words else ""
        return console.render(
            request, "words.html", status, user=user, available=words is not None,
            text=current if text is None else text, count=len(words_of(current)),
            writable=words.writable() if words else False, action=words.action if words else "mask",
            errors=extra.pop("errors", {}), max_words=MAX_WORDS, **extra,
        )  # fmt: skip

    @r.get("/words")
    async def view(request: Request, saved: str | None = None, sample: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        if sample is None or words is None:
            return await page(request, user, saved=saved is not None)
        if not sample.strip() or len(sample) > MAX_TEST_CHARS:
            problem = "type a text to test" if not sample.strip() else f"longer than {MAX_TEST_CHARS} characters"
            return await page(request, user, 400, sample=sample, errors={"sample": problem})
        current = words_of(await anyio.to_thread.run_sync(words.read))
        result = SensitiveWordFilter(current, words.action).apply(sample)
        return await page(request, user, sample=sample, tested=result)

    @r.post("/words")
    async def save(request: Request) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, form = gate
        if words is None:
            return await page(request, user, 409)
        text = form.get("words", "").replace("\r\n", "\n")
        if not words.writable():
            return await page(request, user, 409, text=text, errors={"words": f"{words.path.name} is read-only"})
        problem = problem_of(text)
        if problem:
            return await page(request, user, 400, text=text, errors={"words": problem})
        before = words_of(await anyio.to_thread.run_sync(words.read))
        after = words_of(text)
        new_filter = SensitiveWordFilter(after, words.action)  # built first: a list it cannot take is never written
        try:
            await anyio.to_thread.run_sync(words.write, text if text.endswith("\n") or not text else text + "\n")
        except OSError as exc:
            return await page(request, user, 409, text=text, errors={"words": f"{words.path.name}: {exc.strerror}"})
        words.apply(new_filter)
        console.accounts.audit(
            user.name, "words.save", words.path.name, {"words": len(before)}, _changes(before, after)
        )
        return RedirectResponse(f"{PREFIX}/words?saved=1", status_code=303)

    return r
