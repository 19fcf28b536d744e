"""The service with a slow media step, for the lanes test (tests/faults/test_lanes.py) and benchmark
(bench/lanes_bench.py).

The app is the one `ai-assistant serve` runs (create_app), under uvicorn on loopback, in a thread of the caller's
process, with one change to its registry: the image and voice input adapters (RapidOCR, Whisper) are replaced by a
stand-in that takes a set time per attachment, or waits until the caller opens a gate. The stand-in spends no CPU:
what lanes decide is who waits for a worker, and real OCR on a shared two-core machine would measure the machine.

A burst of media messages goes in the way a long connection (Telegram polling, the Feishu WebSocket) queues what it
receives: through the connector's `queue()`, on the service's own event loop, so every message passes the same
admission (quotas, queue bound, lane) as a webhook; the generic-IM webhook carries no attachments.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import uvicorn

from ai_assistant.app import create_app
from ai_assistant.messages import Attachment, InboundMessage
from ai_assistant.registry import Kind, default_registry
from ai_assistant.settings import load_settings
from tests.helpers import free_port, wait_until

T = TypeVar("T")
MEDIA_TEXT = "the text the media step read"
CONNECTOR = "im-connector"  # tests/helpers.py write_config's generic-IM connector


class MediaStandin:
    """An input adapter for images and voice messages standing in for OCR and speech recognition: `seconds` per
    attachment, or, with a gate, until the gate is opened. Counts what it started and finished."""

    kinds: ClassVar[tuple[str, ...]] = ("image", "voice")

    def __init__(self, seconds: float = 0.0, gate: threading.Event | None = None) -> None:
        self.seconds, self.gate = seconds, gate
        self.started = 0
        self.done = 0

    async def to_text(self, attachment: Attachment) -> str:
        self.started += 1
        if self.gate is not None:
            while not self.gate.is_set():
                await asyncio.sleep(0.02)
        else:
            await asyncio.sleep(self.seconds)
        self.done += 1
        return MEDIA_TEXT


class LanesService:
    """The app on a free loopback port with `media` as its media step; start(), queue_media(), stop()."""

    def __init__(self, config_dir: Path, data_dir: Path, media: MediaStandin) -> None:
        self.media = media
        registry = default_registry()
        for name in ("image_ocr", "voice_whisper"):
            registry.entries.pop((Kind.INPUT_ADAPTER, name), None)
        registry.register(Kind.INPUT_ADAPTER, "media_standin", lambda: media, source="test")
        data_dir.mkdir(parents=True, exist_ok=True)
        self.app = create_app(load_settings(config_dir, data_dir), registry)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True)

    def start(self) -> LanesService:
        self.thread.start()
        wait_until(lambda: self.server.started, 120, "the service under uvicorn")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coro` on the service's event loop (where its store and connectors live)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def queue_media(self, count: int, prefix: str = "media") -> list[str]:
        """`count` image messages, one chat each, queued as a long connection queues them; their event ids."""
        connector = self.app.state.parts.connectors[CONNECTOR]
        image = base64.b64encode(b"\x89PNG stand-in").decode()
        messages = [
            InboundMessage(
                connector=CONNECTOR, event_id=f"{prefix}-{i}", chat_id=f"{prefix}-chat-{i}", user_id=f"{prefix}-{i}",
                text="", received_at=time.time(), attachments=[Attachment(kind="image", data_b64=image)],
            )
            for i in range(count)
        ]  # fmt: skip
        self.call(connector.queue(messages))
        return [m.event_id for m in messages]

    def lane_depths(self) -> dict[str, int]:
        stats = self.call(self.app.state.parts.store.lane_stats())
        return {lane: s.depth for lane, s in stats.items()}
