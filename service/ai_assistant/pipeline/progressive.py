"""Progressive replies: on a platform that can edit a posted message (Slack `chat.update`, Feishu/Lark message edit),
the first words of the answer are posted as soon as the model writes them, and that one message is edited in place as
the rest streams in, at most once per `progressive_interval_seconds` and `progressive_max_edits` times in all. The
final edit, made by the ordinary delivery step after the answer is checkpointed, sets the checkpointed text.

Exactly once: the posted message's id is checkpointed (a fenced store write) right after the post, so a job resumed
after a crash edits that message and never posts a second one. The one window left is a crash between the post and
that write: the resumed job posts again (on Feishu the same uuid makes the platform drop the copy).

Every partial text goes through the output filter first, as the final text does: nothing reaches the user unfiltered.
A failure here never fails the answer: posting falls back to one message at the end, an edit waits for the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from ..connectors.base import Connector
from ..errors import DeliveryFailed
from ..messages import InboundMessage, OutboundText
from .filters import SensitiveWordFilter

log = logging.getLogger(__name__)

TYPING = " …"  # marks a message that is still being written


class Progress:
    def __init__(
        self,
        connector: Connector,
        msg: InboundMessage,
        reply_ref: str | None,
        save_ref: Callable[[str], Awaitable[None]],
        output_filter: SensitiveWordFilter,
    ) -> None:
        self.connector = connector
        self.msg = msg
        self.ref = reply_ref  # set: a previous attempt posted the message already; this one only edits it
        self._save_ref = save_ref
        self._filter = output_filter
        self._edits = 0
        self._last = 0.0
        self._shown = ""
        self._off = False
        self.error: BaseException | None = None  # what save_ref raised (a lost lease): the worker re-raises it

    async def update(self, text: str) -> None:
        """The engine's on_text: the whole answer so far. Never raises (the engine would take it for its own)."""
        if self._off:
            return
        config = self.connector.config
        now = time.monotonic()
        if self.ref is not None and (
            now - self._last < config.progressive_interval_seconds or self._edits >= config.progressive_max_edits
        ):
            return
        checked = self._filter.apply(text)
        if checked.blocked:
            self._off = True  # the final delivery replaces what is shown with the block message
            return
        shown = self.connector.split(checked.text.strip())[:1]
        if not shown or shown[0] == self._shown:
            return
        part = OutboundText(
            self.msg.connector, self.msg.chat_id, shown[0] + TYPING, 1, 1, f"{self.msg.event_id}:1",
            in_reply_to=self.msg,
        )  # fmt: skip
        self._last = now
        try:
            if self.ref is None:
                self.ref = await self.connector.post_editable(part)
                self._shown = shown[0]
                try:
                    await self._save_ref(self.ref)
                except Exception as exc:
                    self.error, self._off = exc, True
                return
            await self.connector.edit(self.ref, part)
            self._edits += 1
            self._shown = shown[0]
        except (DeliveryFailed, NotImplementedError) as exc:
            if self.ref is None:
                self._off = True  # not posted (or not known to be): the answer goes out as one message at the end
            log.warning("progressive reply to %s: %s", self.msg.event_id, exc)
