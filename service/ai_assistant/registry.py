"""The one registry for every extension point: connectors, input adapters, engines, output channels (and the
knowledge base's embedders and vector stores).

Built-ins are declared as entry points in pyproject.toml exactly like third-party packages, so there is one discovery
path (docs/adr/0001-one-registry.md). Archive plugins register here too, with their source recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)


class Kind(StrEnum):
    CONNECTOR = "connectors"
    INPUT_ADAPTER = "input_adapters"
    ENGINE = "engines"
    CHANNEL = "channels"
    EMBEDDER = "embedders"
    VECTOR_STORE = "vector_stores"

    @property
    def entry_point_group(self) -> str:
        return f"ai_assistant.{self.value}"


@dataclass(frozen=True)
class Entry:
    kind: Kind
    name: str
    factory: Callable[..., Any]
    source: str  # "builtin", "package:<dist>", "plugin:<name>"


@dataclass
class Registry:
    entries: dict[tuple[Kind, str], Entry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def register(self, kind: Kind, name: str, factory: Callable[..., Any], source: str = "builtin") -> None:
        key = (kind, name)
        if key in self.entries and self.entries[key].source != source:
            self.problems.append(
                f"{kind.value}.{name}: provided by both {self.entries[key].source} and {source}; keeping the first"
            )
            return
        self.entries[key] = Entry(kind, name, factory, source)

    def get(self, kind: Kind, name: str) -> Callable[..., Any]:
        try:
            return self.entries[(kind, name)].factory
        except KeyError:
            raise LookupError(
                f"no {kind.value[:-1].replace('_', ' ')} named {name!r}; known: {self.names(kind)}"
            ) from None

    def names(self, kind: Kind) -> list[str]:
        return sorted(name for (k, name) in self.entries if k is kind)

    def load_entry_points(self) -> None:
        """Discover every installed extension. A broken one is reported and skipped, never fatal."""
        for kind in Kind:
            for ep in entry_points(group=kind.entry_point_group):
                dist = ep.dist.name if ep.dist else "unknown"
                source = "builtin" if dist == "ai-assistant" else f"package:{dist}"
                try:
                    factory = ep.load()
                except Exception as exc:  # a third-party import can raise anything; it must not take us down
                    msg = f"{kind.value}.{ep.name} from {source} failed to load: {type(exc).__name__}: {exc}"
                    log.warning(msg)
                    self.problems.append(msg)
                    continue
                self.register(kind, ep.name, factory, source)


def default_registry() -> Registry:
    registry = Registry()
    registry.load_entry_points()
    return registry
