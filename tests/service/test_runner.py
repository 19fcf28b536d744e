"""runner.serve_all in this process, with a real uvicorn server on loopback: what it does to the garbage collector at
start and after a reload (SIGHUP)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import weakref
from typing import Any

from fastapi import FastAPI

from ai_assistant.runner import Listener, serve_all
from tests.helpers import free_port


class Cyclic:
    """Freed only by the cycle collector, never by reference counting."""

    def __init__(self) -> None:
        self.me = self


def test_start_up_objects_are_frozen_and_what_a_reload_replaces_is_collected_again() -> None:
    holder: dict[str, Any] = {"old": Cyclic()}
    old = weakref.ref(holder["old"])
    frozen_at_ready: list[int] = []

    def on_ready() -> None:
        frozen_at_ready.append(gc.get_freeze_count())
        os.kill(os.getpid(), signal.SIGHUP)

    async def on_reload() -> None:
        holder.clear()  # the reload replaces the object; a frozen cycle would stay forever

    async def main() -> None:
        listener = Listener(FastAPI(), "127.0.0.1", free_port(), "test")
        server = asyncio.create_task(serve_all([listener], on_ready=on_ready, on_reload=on_reload))
        for _ in range(100):
            if old() is None:
                break
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        await server

    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()  # leave the test process as it was
    assert frozen_at_ready and frozen_at_ready[0] > 1000, "start-up objects moved to the permanent generation"
    assert old() is None, "after the reload the replaced cycle was collected"
