"""What every node kind shares: its document fields, what it needs to run, and what a run of it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ...channels.base import OutputChannel
from ...messages import InboundMessage
from ..templates import render

NEXT = "next"


class NodeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    kind: str
    name: str = ""

    # The edge labels a node of this kind may leave by; `terminal` kinds may have no outgoing edge at all.
    labels: ClassVar[tuple[str, ...]] = (NEXT,)
    terminal: ClassVar[bool] = False

    def edge_labels(self) -> tuple[str, ...]:
        return self.labels

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        """(field, template, extra top-level names it may use) for every template in the node, for checking at save."""
        return iter(())

    def sets(self) -> set[str]:
        """The `vars` this node sets."""
        return set()

    async def run(self, ctx: RunContext) -> Outcome:
        raise NotImplementedError


@dataclass
class Services:
    """What nodes may use; each part is optional so a workflow without, say, knowledge needs none."""

    engine: object | None = None
    retriever: Callable[[InboundMessage, str], Awaitable[Any]] | None = None
    channel: OutputChannel | None = None
    dry_run: bool = False  # the editor's dry run (runner.dry_run): nodes with side effects show what they would do


@dataclass
class RunContext:
    message: InboundMessage
    text: str  # the user's text after the input filter
    vars: dict[str, Any]
    outputs: dict[str, dict[str, Any]]  # finished nodes' outputs by node id
    step: int
    services: Services
    settings: Any  # the workflow's WorkflowSettings (schema.py imports the nodes, so not typed here)

    def context(self, **extra: Any) -> dict[str, Any]:
        message = {
            "text": self.text,
            "user_id": self.message.user_id,
            "chat_id": self.message.chat_id,
            "connector": self.message.connector,
            "event_id": self.message.event_id,
            "thread_id": self.message.thread_id,
            "is_group": self.message.is_group,
        }
        return {"message": message, "vars": self.vars, "nodes": self.outputs, **extra}

    def render(self, source: str, **extra: Any) -> str:
        return render(source, self.context(**extra))


@dataclass
class Outcome:
    """One node's result: its outputs (kept in the trace and under `nodes.<id>`), the edge it leaves by, the
    variables it sets, the text it adds to the reply, and whether the run ends here."""

    outputs: dict[str, Any] = field(default_factory=dict)
    label: str = NEXT
    inputs: Mapping[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    reply: str | None = None
    end: bool = False
