"""The answer cache: a repeated question in a connector that opted in is answered from the shared store instead of the
engine (issue 25; docs/adr/0006-answer-cache-only-without-memory.md).

The key is the normalised question, the knowledge base's version, the workflow's version, the model (engine, model
id and the generation settings that change its text) and a digest of the rest of the prompt (system prompt and the
documents retrieved for it): an ingest, a delete, a model change or a new system prompt each makes a new key, and the
old entries age out through their TTL and the size bound. Only answers produced with no conversation history in the
prompt are looked up or stored, so nothing a chat's memory shaped reaches another chat.

What is cached is the model's own text: the output filter, the sources footer and the memory are applied to a cached
answer exactly as to a fresh one. A store that fails a lookup or a write costs the cache, never the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass

from ..errors import ConfigError
from ..messages import ChatTurn, InboundMessage
from ..observability import ANSWER_CACHE_LOOKUPS
from ..settings import AnswerCacheSettings, Settings
from ..store import StateStore

log = logging.getLogger(__name__)

# The one place the workflow's version joins the key. Until workflows land every answer comes from the same one;
# then this becomes the version of the workflow that produced the answer, so editing a workflow invalidates its answers.
WORKFLOW_VERSION = "default"

# Trailing punctuation does not change a question ("How many days of leave?" and "how many days of leave").
_TRAILING = " \t?？!！.。…~～"

Chat = Callable[[list[ChatTurn]], Awaitable[str]]


def normalise(question: str) -> str:
    """Width, case and spacing folded (NFKC makes full-width Latin and digits plain), trailing punctuation dropped."""
    text = " ".join(unicodedata.normalize("NFKC", question).casefold().split())
    return text.rstrip(_TRAILING)


def check_connectors(settings: AnswerCacheSettings, connectors: Collection[str]) -> None:
    """Every connector named must exist: a misspelt name would otherwise leave the cache silently off."""
    for i, name in enumerate(settings.connectors):
        if name not in connectors:
            known = ", ".join(sorted(connectors)) or "none"
            raise ConfigError(
                "assistant.yaml", f"answer_cache.connectors[{i}]", f"no connector named {name!r} (known: {known})"
            )


@dataclass
class AnswerCache:
    settings: AnswerCacheSettings
    store: StateStore
    model: str  # engine, model id and the generation settings that change its text
    kb_version: Callable[[], Awaitable[str]] | None = None  # None: no knowledge base

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: StateStore,
        connectors: Collection[str],
        kb_version: Callable[[], Awaitable[str]] | None,
    ) -> AnswerCache | None:
        """None when no connector opted in; a ConfigError (file and key) for a connector that does not exist."""
        check_connectors(settings.answer_cache, connectors)
        if not settings.answer_cache.connectors:
            return None
        engine = settings.engine
        model = f"{engine.name}/{engine.model}/max_tokens={engine.max_tokens}/temperature={engine.temperature}"
        cache = cls(settings.answer_cache, store, model, kb_version)
        create_series(settings.answer_cache.connectors)
        return cache

    def around(self, chat: Chat, msg: InboundMessage, question: str, *, context: Iterable[str], personal: bool) -> Chat:
        """`chat` (the engine's) behind the cache for this message. `context` is every other part of the prompt (the
        system prompt, the documents); `personal` is True when conversation memory is in the prompt."""
        if msg.connector not in self.settings.connectors:
            return chat
        if personal:
            ANSWER_CACHE_LOOKUPS.labels(connector=msg.connector, result="personal").inc()
            return chat
        parts = list(context)

        async def cached(turns: list[ChatTurn]) -> str:
            try:
                key = await self.key(question, parts)
                found = await self.store.cache_get(msg.connector, key)
            except Exception as exc:
                ANSWER_CACHE_LOOKUPS.labels(connector=msg.connector, result="error").inc()
                log.warning("answer cache lookup failed (%s: %s); asking the engine", type(exc).__name__, exc)
                return await chat(turns)
            if found is not None:
                ANSWER_CACHE_LOOKUPS.labels(connector=msg.connector, result="hit").inc()
                log.info("answer cache hit for %s", msg.event_id)
                return found
            ANSWER_CACHE_LOOKUPS.labels(connector=msg.connector, result="miss").inc()
            answer = await chat(turns)
            if answer.strip():
                try:
                    ttl, size = self.settings.ttl_seconds, self.settings.max_entries
                    await self.store.cache_put(msg.connector, key, answer, ttl, size)
                except Exception as exc:
                    log.warning("answer cache write failed (%s: %s)", type(exc).__name__, exc)
            return answer

        return cached

    async def key(self, question: str, context: list[str]) -> str:
        kb = await self.kb_version() if self.kb_version is not None else "none"
        prompt = hashlib.sha256("\0".join(context).encode()).hexdigest()
        parts = [normalise(question), f"kb={kb}", f"workflow={WORKFLOW_VERSION}", self.model, prompt]
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def create_series(connectors: Iterable[str]) -> None:
    """Every result exists at 0 from the start, so the hit ratio's `rate()` sees the first lookups."""
    for connector in connectors:
        for result in ("hit", "miss", "personal", "error"):
            ANSWER_CACHE_LOOKUPS.labels(connector=connector, result=result)
