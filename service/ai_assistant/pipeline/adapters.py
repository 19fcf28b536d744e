"""Input adapters turn what a user sent (text, an image, a voice clip) into text for the engine."""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from ..messages import Attachment, InboundMessage


@runtime_checkable
class InputAdapter(Protocol):
    """Handles attachments of the kinds it lists (`"image"`, `"voice"`, ...). Registered under Kind.INPUT_ADAPTER."""

    kinds: ClassVar[tuple[str, ...]]

    async def to_text(self, attachment: Attachment) -> str: ...


class TextAdapter:
    """Plain text needs no conversion; it is registered so that text, like every input kind, has an adapter."""

    kinds: ClassVar[tuple[str, ...]] = ()

    async def to_text(self, attachment: Attachment) -> str:
        return ""


async def message_text(message: InboundMessage, adapters: dict[str, InputAdapter]) -> str:
    """The user's text plus the text of each attachment an adapter understands."""
    pieces = [message.text] if message.text else []
    for att in message.attachments:
        adapter = adapters.get(att.kind)
        if adapter is None:
            pieces.append(f"[{att.kind} attachment: no adapter configured]")
            continue
        converted = (await adapter.to_text(att)).strip()
        if converted:
            pieces.append(f"[{att.kind}] {converted}")
    return "\n".join(pieces)
