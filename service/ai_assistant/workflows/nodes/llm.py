"""LLM call and knowledge retrieval: the engine and the retriever the default answer uses, driven by templates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from ...messages import ChatTurn
from ..errors import NodeFailed
from .base import NodeBase, Outcome, RunContext

VAR = r"^[a-z_][a-z0-9_]{0,63}$"


class LlmNode(NodeBase):
    """One model call: `system` and `prompt` are templates. The text is `nodes.<id>.text`, and `vars.<save_as>` if
    set. An unavailable engine is not a node failure: the job waits for it like any answer (pipeline/worker.py), and
    resumes here, after the nodes already checkpointed."""

    kind: Literal["llm"]
    prompt: str = Field(min_length=1)
    system: str = ""
    save_as: str | None = Field(default=None, pattern=VAR)

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        yield "prompt", self.prompt, frozenset()
        if self.system:
            yield "system", self.system, frozenset()

    def sets(self) -> set[str]:
        return {self.save_as} if self.save_as else set()

    async def run(self, ctx: RunContext) -> Outcome:
        engine = ctx.services.engine
        if engine is None:
            raise NodeFailed("no engine is configured")
        prompt, system = ctx.render(self.prompt), ctx.render(self.system) if self.system else ""
        turns = ([ChatTurn("system", system)] if system else []) + [ChatTurn("user", prompt)]
        text = str(await engine.chat(turns)).strip()  # type: ignore[attr-defined]
        return Outcome(
            outputs={"text": text},
            inputs={"system": system, "prompt": prompt},
            sets={self.save_as: text} if self.save_as else {},
        )


class KnowledgeNode(NodeBase):
    """Retrieval from the knowledge base (the retriever of the default answer). Outputs `found`, `context` (the
    delimited documents, to put in an LLM prompt) and `sources` (the footer); `vars.<save_as>` gets the context."""

    kind: Literal["knowledge"]
    query: str = "{{ message.text }}"
    save_as: str | None = Field(default=None, pattern=VAR)

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        yield "query", self.query, frozenset()

    def sets(self) -> set[str]:
        return {self.save_as} if self.save_as else set()

    async def run(self, ctx: RunContext) -> Outcome:
        query = ctx.render(self.query)
        retriever = ctx.services.retriever
        if retriever is None:  # knowledge is off: an empty result, as the default answer has then
            grounding = None
        else:
            grounding = await retriever(ctx.message, query)
        documents = list(getattr(grounding, "documents", ()) or ())
        context = "<documents>\n" + "\n".join(documents) + "\n</documents>" if documents else ""
        outputs = {"found": bool(documents), "context": context, "sources": getattr(grounding, "footer", "") or ""}
        return Outcome(outputs=outputs, inputs={"query": query}, sets={self.save_as: context} if self.save_as else {})
