"""The small node kinds: set variables, reply, end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from .base import NodeBase, Outcome, RunContext


class SetNode(NodeBase):
    """Sets `vars.<name>` from templates, in the order written."""

    kind: Literal["set"]
    values: dict[str, str] = Field(min_length=1)

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        for name, source in self.values.items():
            yield f"values.{name}", source, frozenset()

    def sets(self) -> set[str]:
        return set(self.values)

    async def run(self, ctx: RunContext) -> Outcome:
        values = {}
        for name, source in self.values.items():
            values[name] = ctx.render(source)
            ctx.vars[name] = values[name]  # a later value may use an earlier one
        return Outcome(outputs=values, sets=values)


class ReplyNode(NodeBase):
    """Adds text to the answer; several reply nodes on one path make one answer, blank-line separated."""

    kind: Literal["reply"]
    text: str = Field(min_length=1)
    terminal: ClassVar[bool] = True

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        yield "text", self.text, frozenset()

    async def run(self, ctx: RunContext) -> Outcome:
        text = ctx.render(self.text).strip()  # a template's conditional parts leave spaces at the ends
        return Outcome(outputs={"text": text}, reply=text)


class EndNode(NodeBase):
    kind: Literal["end"]
    labels: ClassVar[tuple[str, ...]] = ()
    terminal: ClassVar[bool] = True

    async def run(self, ctx: RunContext) -> Outcome:
        return Outcome(end=True)
