"""Trigger and branch: which messages start a workflow, and which way a run goes. Both match text the same way:
keywords (case-insensitive, anywhere), commands (`/name` as the first word) or a regular expression."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...messages import InboundMessage
from .base import NodeBase, Outcome, RunContext

DEFAULT = "default"


class TextMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(default_factory=list)
    commands: list[str] = Field(default_factory=list)
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("commands")
    @classmethod
    def _slashed(cls, value: list[str]) -> list[str]:
        for command in value:
            if not re.fullmatch(r"/[\w-]+", command):
                raise ValueError(f"{command!r} is not a command (a slash and a word, e.g. /order)")
        return value

    def empty(self) -> bool:
        return not (self.keywords or self.commands or self.regex)

    def matches(self, text: str) -> str | None:
        """What matched (for the trace), or None."""
        lowered = text.lower()
        for keyword in self.keywords:
            if keyword.lower() in lowered:
                return f"keyword {keyword}"
        first = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
        for command in self.commands:
            if first == command.lower():
                return f"command {command}"
        if self.regex is not None and re.search(self.regex, text, re.IGNORECASE):
            return f"regex {self.regex}"
        return None


class TriggerNode(NodeBase, TextMatch):
    """Where a run starts. Connectors and chats narrow it down (empty: any); keywords, commands and regex are
    alternatives (none of them: every message in those connectors and chats)."""

    kind: Literal["trigger"]
    connectors: list[str] = Field(default_factory=list)
    chats: list[str] = Field(default_factory=list)

    def accepts(self, message: InboundMessage) -> str | None:
        if self.connectors and message.connector not in self.connectors:
            return None
        if self.chats and message.chat_id not in self.chats:
            return None
        return "any message" if self.empty() else self.matches(message.text)

    async def run(self, ctx: RunContext) -> Outcome:
        return Outcome(outputs={"matched": self.accepts(ctx.message) or "no (a dry run starts here anyway)"})


class Case(TextMatch):
    label: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")


class BranchNode(NodeBase):
    """A classifier of intent by keywords, commands or regex: the first case that matches `input` (the message text
    unless set) names the edge taken; none matches: the `default` edge."""

    kind: Literal["branch"]
    input: str = "{{ message.text }}"
    cases: list[Case] = Field(min_length=1)
    labels: ClassVar[tuple[str, ...]] = ()

    @field_validator("cases")
    @classmethod
    def _distinct(cls, value: list[Case]) -> list[Case]:
        seen: set[str] = set()
        for case in value:
            if case.label in seen or case.label == DEFAULT:
                raise ValueError(f"case label {case.label!r} is used twice (or is the reserved 'default')")
            if case.empty():
                raise ValueError(f"case {case.label!r} matches nothing: give keywords, commands or regex")
            seen.add(case.label)
        return value

    def edge_labels(self) -> tuple[str, ...]:
        return (*(c.label for c in self.cases), DEFAULT)

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        yield "input", self.input, frozenset()

    async def run(self, ctx: RunContext) -> Outcome:
        text = ctx.render(self.input)
        for case in self.cases:
            matched = case.matches(text)
            if matched:
                return Outcome(
                    outputs={"label": case.label, "matched": matched}, label=case.label, inputs={"input": text}
                )
        return Outcome(outputs={"label": DEFAULT}, label=DEFAULT, inputs={"input": text})
