"""`platform: probe`: the deploy gate's synthetic conversation, which no IM user sees and no platform answers.

Inbound is generic_im's, byte for byte (Standard Webhooks signature, the same body): so the gate's message goes
through the incoming code's real edge (allowlist, signature, quotas, de-duplication, the durable queue) and its
real worker (commands, checkpoint, delivery). Outbound records the answer in the shared state store instead of
POSTing it anywhere; `ai-assistant probe` (probe_cli.py) reads it back from there.

The store, not a file or the process: the colours share one queue, so the job may be answered by a worker of
either colour, on any host that shares the store.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import Field

from .. import __version__
from ..errors import DeliveryFailed
from ..messages import OutboundText
from .generic_im import GenericIMConfig, GenericIMConnector

# How long an answer stays readable in the store: far longer than any gate waits for it.
RECORD_TTL_SECONDS = 900.0
# The answer cache's bound per connector (store.cache_put): the gate sends one probe per deploy.
RECORD_MAX_ENTRIES = 1000
# Key of the mark a second, different answer to the same event leaves (a colour that queued a duplicate).
TWICE = "twice"


def record_key(event_id: str, part: int) -> str:
    return f"probe:{event_id}:{part}"


@runtime_checkable
class Recorder(Protocol):
    """The parts of the state store the probe writes its answers with (the app hands every connector the store)."""

    async def hold(self, key: str, holder: str, ttl: float) -> bool: ...

    async def cache_put(self, connector: str, key: str, answer: str, ttl: float, max_entries: int) -> None: ...


class ProbeConfig(GenericIMConfig):
    # mypy: the generic_im Literal narrowed to this platform's name, as every platform config does from its base.
    platform: Literal["probe"] = "probe"  # type: ignore[assignment]
    reply_url: str = Field("", description="unused: answers are recorded in the state store, never sent")


class ProbeConnector(GenericIMConnector):
    platform: ClassVar[str] = "probe"
    in_console: ClassVar[bool] = False  # roles/assistant writes and removes it with the deploy gate
    Config = ProbeConfig
    config: ProbeConfig

    async def send(self, part: OutboundText) -> None:
        store = self.leases
        if not isinstance(store, Recorder):
            raise DeliveryFailed(f"{self.name}: no state store to record the probe's answer in")
        event_id = part.in_reply_to.event_id if part.in_reply_to else part.idempotency_key
        key = record_key(event_id, part.part)
        # One answer per event: a send retried with the same idempotency key holds the same mark; a second job for
        # the same event (a duplicate that got queued) has another key and is recorded as such, for the gate to see.
        if not await store.hold(key, part.idempotency_key, RECORD_TTL_SECONDS):
            await store.cache_put(self.name, f"{key}:{TWICE}", part.idempotency_key, RECORD_TTL_SECONDS, 10)
        record = {"text": part.text, "part": part.part, "parts": part.parts, "version": __version__}
        await store.cache_put(self.name, key, json.dumps(record), RECORD_TTL_SECONDS, RECORD_MAX_ENTRIES)
