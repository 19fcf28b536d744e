"""Run several uvicorn servers in one event loop (the service, its internal metrics port, the local inbox) and stop
them all on Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvloop


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals are handled once for all servers in `serve_all`.
        yield


@dataclass
class Listener:
    app: Any
    host: str
    port: int
    name: str


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop, the loop `uvicorn` itself picks when it owns the loop (loop="auto"). Because
    `serve_all` runs several servers in one loop, the CLI creates the loop, not uvicorn, and asyncio's default
    selector loop would cost the webhook ack path about a third of its throughput (docs/benchmarks.md).

    The GIL switch interval goes from 5 ms to 0.5 ms: the SQLite writer thread (group commit) must win the GIL back
    after every statement and fsync, and with the default it waits up to 5 ms each time while the loop is busy, so
    acks queue behind it (measured: 0.38 -> 0.49 of the bare endpoint's throughput, docs/benchmarks.md). The shorter
    interval only matters while another thread is waiting for the GIL."""
    sys.setswitchinterval(0.0005)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _settle_heap() -> None:
    """Move everything built at start-up (modules, the app, settings, models, connectors: about 130,000 objects) out
    of the garbage collector's reach. Without this every full collection walks all of them: about 70 ms with the
    event loop stopped, which alone can put the webhook ack's p99 over 10 ms (docs/benchmarks.md). Called again
    after a reload (SIGHUP), so that what the reload replaced is collectable: unfreeze, collect, freeze."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def _reload_then_settle(reload: Callable[[], Coroutine[Any, Any, None]]) -> None:
    await reload()
    _settle_heap()


async def serve_all(
    listeners: list[Listener],
    on_ready: Callable[[], None] | None = None,
    on_reload: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    servers = [
        # proxy_headers=False: uvicorn would otherwise trust X-Forwarded-For from any loopback peer, and a local nginx
        # would let a forged header pass the connectors' allowed_cidrs. Our edge honours X-Forwarded-For only from
        # server.trusted_proxies.
        _Server(
            uvicorn.Config(
                lst.app,
                host=lst.host,
                port=lst.port,
                log_config=None,
                access_log=False,
                lifespan="on",
                proxy_headers=False,
            )
        )
        for lst in listeners
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    reloads: set[asyncio.Task[None]] = set()
    if on_reload is not None:
        reload = on_reload

        def hup() -> None:
            task = asyncio.create_task(_reload_then_settle(reload))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hup)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):  # a server failed to start (port in use, lifespan error)
                stop()
                break
            await asyncio.sleep(0.05)
        else:
            _settle_heap()
            if on_ready:
                on_ready()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()  # one server ending (error or signal) ends them all
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception():
                raise task.exception()  # type: ignore[misc]
        if any(not s.started for s in servers):
            raise SystemExit(1)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
