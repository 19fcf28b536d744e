"""Connector changes applied to the running service, without a restart and without dropping messages in flight
(docs/adr/0102-what-a-console-change-applies-live.md).

After the console has written `connectors.yaml`, `LiveConnectors.apply` builds the connectors again with the loader
the service started with (the same registry, the same validation), then swaps what changed into the one connectors
mapping that the pipeline, the reply channel, the notifier and routed channels all read by name at each use, and
swaps the webhook routes. Nothing queued is touched: a job for an edited connector is answered by the new object when
the worker reaches it (the queue is keyed by connector name), once, through the usual exactly-once delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from ..connectors.base import Connector
from ..connectors.loader import load_connectors
from ..edge import AssistantApp
from ..errors import ConfigError
from ..observability import create_series, register_secrets
from ..registry import Registry
from ..settings import Settings

log = logging.getLogger(__name__)


class ApplyFailed(Exception):
    """The saved file could not be applied to the running service; it still applies at the next restart."""


@dataclass
class Applied:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.added or self.changed or self.removed)


class LiveConnectors:
    def __init__(
        self,
        app: AssistantApp,
        settings: Settings,
        registry: Registry,
        connectors: MutableMapping[str, Connector],
        mount: Callable[[Connector], None],
        wire: Callable[[Connector], None],
    ) -> None:
        self.app = app
        self.settings = settings
        self.registry = registry
        self.connectors = connectors
        self._mount = mount  # adds the connector's webhook route, built exactly as at start
        self._wire = wire  # sets sink, leases and feedback, as the lifespan does before start()
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def names(self) -> list[str]:
        return sorted(self.connectors)

    def still_needed(self, name: str) -> str | None:
        """Why `name` cannot be disabled or deleted (a routed channel or the answer cache names it), or None. Asked
        before the file is written: the service would refuse to start with such a file, and the running one would
        have a channel pointing at nothing."""
        from ..channels.loader import load_channels
        from ..pipeline.answer_cache import check_connectors

        rest = {n: c for n, c in self.connectors.items() if n != name}
        try:
            load_channels(self.settings.config_dir, self.registry, rest)
            check_connectors(self.settings.answer_cache, rest)
        except ConfigError as exc:
            return str(exc)
        return None

    async def apply(self) -> Applied:
        """Make the running connectors what `connectors.yaml` says. Raises ApplyFailed (nothing swapped) when the
        file cannot be loaded."""
        async with self._lock:  # two admins saving at once apply one after the other
            try:
                fresh = load_connectors(self.settings, self.registry)
            except ConfigError as exc:
                raise ApplyFailed(str(exc)) from None
            done = Applied()
            keep: dict[str, Connector] = {}
            for name, new in fresh.items():
                old = self.connectors.get(name)
                if old is None:
                    done.added.append(name)
                elif type(old) is type(new) and old.config == new.config:
                    keep[name] = old  # untouched: its long connection and HTTP client stay as they are
                else:
                    done.changed.append(name)
            done.removed = [name for name in self.connectors if name not in fresh]
            if not done.anything:
                return done
            outgoing = [self.connectors[n] for n in (*done.changed, *done.removed)]
            incoming = [fresh[n] for n in (*done.added, *done.changed)]
            # A long connection is held under a lease per connector object: the old one lets go before the new one
            # asks, or the new one would stand by forever. The platform keeps unacknowledged events meanwhile.
            for old in outgoing:
                if old.link is not None:
                    await old.aclose()
            create_series([c.name for c in incoming], self.settings.engine.name)
            for new in incoming:
                register_secrets(new.secrets())
                self._wire(new)
                await new.start()
            # From here to the end of the swap there is no await: a request or a worker sees either the old set of
            # connectors and routes or the new one, never a mix.
            for old in outgoing:
                if old.path is not None:
                    self.app.remove_webhook(old.path)
            for name in done.removed:
                del self.connectors[name]
            for new in incoming:
                self.connectors[new.name] = new
                if new.path is not None:
                    self._mount(new)
            for old in outgoing:
                if old.link is None:
                    self._retire(old)
            log.info(
                "connectors applied live: added %s, changed %s, removed %s", *(done.added, done.changed, done.removed)
            )
            return done

    def _retire(self, old: Connector) -> None:
        """Close a replaced webhook connector's HTTP client only after a send that looked it up before the swap has
        had its full time (every outbound call is bounded by http_timeout_seconds)."""

        async def later() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(old.config.http_timeout_seconds + 5)
            await old.aclose()

        task = asyncio.create_task(later(), name=f"retire-connector-{old.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        """At shutdown: close what is still waiting for retirement now (the sends are over by then)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
