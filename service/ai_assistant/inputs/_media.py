"""What both media adapters share: getting an attachment's bytes within a size bound."""

from __future__ import annotations

import base64
import binascii

from ..messages import Attachment


class UnusableAttachment(Exception):
    """The attachment cannot be turned into text; the message is shown to the model (and so the user) as a note."""


def attachment_bytes(attachment: Attachment, max_bytes: int) -> bytes:
    if attachment.data_b64 is None:
        if attachment.url:
            # Platform media URLs need the platform's token and point at the internet: the connector downloads them.
            raise UnusableAttachment(f"the {attachment.kind} was given only as a link, which is not downloaded here")
        raise UnusableAttachment(f"the {attachment.kind} attachment is empty")
    if len(attachment.data_b64) > (max_bytes * 4) // 3 + 4:
        raise UnusableAttachment(f"the {attachment.kind} is larger than {max_bytes // (1024 * 1024)} MiB")
    try:
        return base64.b64decode(attachment.data_b64, validate=True)
    except (binascii.Error, ValueError):
        raise UnusableAttachment(f"the {attachment.kind} attachment is not valid base64") from None


def note(what: str, reason: str) -> str:
    return f"(the user sent {what} that could not be read: {reason})"
