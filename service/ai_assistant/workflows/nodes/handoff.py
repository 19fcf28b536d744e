"""Hand-off to a human: post the conversation's gist to another chat (a support group, a channel) through the
existing output channel, so the platform's own connector delivers it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from ...errors import DeliveryFailed, DeliveryUncertain
from ...messages import OutboundText
from ..errors import NodeFailed
from .base import NodeBase, Outcome, RunContext


class HandoffNode(NodeBase):
    """Posts `text` to `chat_id` on `connector` (the message's own connector unless set). Its idempotency key is
    derived from the event id, node id and step, so a resend after a crash can be de-duplicated by the platform."""

    kind: Literal["handoff"]
    chat_id: str = Field(min_length=1)
    connector: str | None = None
    text: str = Field(min_length=1)
    labels: ClassVar[tuple[str, ...]] = ("next", "error")
    terminal: ClassVar[bool] = True

    def templates(self) -> Iterator[tuple[str, str, frozenset[str]]]:
        yield "text", self.text, frozenset()

    async def run(self, ctx: RunContext) -> Outcome:
        connector = self.connector or ctx.message.connector
        text = ctx.render(self.text)
        inputs = {"connector": connector, "chat_id": self.chat_id, "text": text}
        if ctx.services.dry_run:
            return Outcome(outputs={"delivered": False, "dry_run": "not posted in a dry run"}, inputs=inputs)
        channel = ctx.services.channel
        if channel is None:
            raise NodeFailed("no output channel to hand off through")
        key = f"{ctx.message.event_id}:{self.id}:{ctx.step}"
        part = OutboundText(connector, self.chat_id, text, 1, 1, key)
        try:
            await channel.deliver(part)
        except DeliveryUncertain as exc:  # may have been posted: not sent again (at most one copy, as for answers)
            return Outcome(outputs={"delivered": "unconfirmed", "detail": str(exc)}, inputs=inputs)
        except DeliveryFailed as exc:
            raise NodeFailed(f"hand-off to {connector}:{self.chat_id} failed: {exc}") from exc
        return Outcome(outputs={"delivered": True}, inputs=inputs)
