"""Workers under supervision. A worker whose store calls fail (Redis restarting, a full disk) logs the cause, backs
off and carries on; a worker loop that dies of a bug is started again. What each worker is doing shows in /readyz and
in `ai_assistant_workers_up`, so an instance that acknowledges messages it cannot answer is taken out of rotation and
alerted on (AIAssistantWorkersDown) instead of failing silently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from ..observability import WORKER_ERRORS, WORKERS_CONFIGURED, WORKERS_UP
from ..settings import LaneSettings, WorkerSettings
from ..store.base import LANES, Lane
from .lanes import pools

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


@dataclass
class WorkerState:
    """One worker's health as last seen: failing since when, and why."""

    name: str
    failing_since: float | None = None
    failures: int = 0
    cause: str = ""
    running: bool = False
    # The lanes this worker claims from (pipeline/lanes.py): its own, and on a text worker any lane that has no
    # workers of its own here.
    lanes: tuple[Lane, ...] = LANES

    def ok(self) -> None:
        if self.failing_since is not None:
            log.info("%s works again after %d failure(s)", self.name, self.failures)
        self.failing_since, self.failures, self.cause = None, 0, ""

    def failed(self, step: str, exc: BaseException) -> float:
        """Record a failure of `step`; returns how long to back off (jittered, doubling, at most 30 s)."""
        WORKER_ERRORS.labels(step=step).inc()
        self.failures += 1
        self.cause = f"{step}: {type(exc).__name__}: {exc}"[:300]
        if self.failing_since is None:
            self.failing_since = time.time()
        ceiling = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(self.failures, 10))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)

    @property
    def healthy(self) -> bool:
        return self.running and self.failing_since is None


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Workers:
    """One pool of worker loops (Pipeline.run) per lane, each loop restarted if it ever ends with an error."""

    def __init__(self, pipeline: object, settings: WorkerSettings, lanes: LaneSettings | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.states = []
        if settings.enabled:
            for lane, size, claims in pools(settings, lanes or LaneSettings()):
                self.states += [WorkerState(f"{lane}-worker-{i}", lanes=claims) for i in range(size)]
        WORKERS_CONFIGURED.set(len(self.states))
        WORKERS_UP.set_function(lambda: sum(s.healthy for s in self.states))

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._supervise(state, stop), name=state.name) for state in self.states]

    async def _supervise(self, state: WorkerState, stop: asyncio.Event) -> None:
        state.running = True
        try:
            while not stop.is_set():
                try:
                    await self.pipeline.run(stop, state)  # type: ignore[attr-defined]
                except Exception as exc:  # a bug in the loop itself: say so, and start it again
                    delay = state.failed("loop", exc)
                    log.exception("%s stopped with an error; restarting it in %.1f s", state.name, delay)
                    await sleep_unless_stopped(stop, delay)
        finally:
            state.running = False

    def problems(self) -> list[str]:
        """Why workers cannot do their work right now (empty when all can)."""
        out = []
        for state in self.states:
            if not state.running:
                out.append(f"{state.name}: not running")
            elif state.failing_since is not None:
                out.append(f"{state.name}: failing for {time.time() - state.failing_since:.0f} s ({state.cause})")
        return out
