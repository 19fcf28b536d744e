"""Lanes by request type: which queue a message waits in, and which workers take it up (docs/architecture.md, "Lanes";
docs/adr/0007-lanes-by-request-type.md).

A short question should not wait behind a burst of image transcriptions or long write-ups, so each kind waits in a
lane of its own, answered by workers of its own (`worker.concurrency` for text, `lanes.long_workers`,
`lanes.media_workers`). The rule, in this order:

1. media: the message carries an attachment (an image, a voice message, a file): OCR, speech recognition or a
   platform download comes before the model.
2. long: its text is at least `lanes.long_min_chars` characters, or contains one of `lanes.long_keywords`
   (case-insensitive).
3. text: everything else, and every message admitted only for a canned reply (over a quota).

The lane is decided once, when the message is queued, and kept with it (a retry, a replay stay in their lane).
"""

from __future__ import annotations

from ..messages import InboundMessage
from ..settings import LaneSettings, WorkerSettings
from ..store.base import LANES, Lane


def classify(message: InboundMessage, lanes: LaneSettings, *, shed: str | None = None) -> Lane:
    if shed is not None:  # no model, no media step: a canned reply is as quick as answers get
        return "text"
    if message.attachments:
        return "media"
    text = message.text
    if lanes.long_min_chars and len(text) >= lanes.long_min_chars:
        return "long"
    folded = text.casefold()
    if any(keyword.casefold() in folded for keyword in lanes.long_keywords):
        return "long"
    return "text"


def pools(worker: WorkerSettings, lanes: LaneSettings) -> list[tuple[Lane, int, tuple[Lane, ...]]]:
    """(lane, workers, the lanes they claim from) for this instance. A lane given no workers here is claimed by the
    text workers, so its messages are still answered (by a mixed pool, as before lanes) rather than stranded."""
    sizes: dict[Lane, int] = {"text": worker.concurrency, "long": lanes.long_workers, "media": lanes.media_workers}
    unstaffed = tuple(lane for lane in LANES if sizes[lane] == 0)
    return [(lane, sizes[lane], (lane, *unstaffed) if lane == "text" else (lane,)) for lane in LANES if sizes[lane]]
