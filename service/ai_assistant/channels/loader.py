"""`channels.yaml` (optional): extra output channels and which answers they receive.

    audit-webhook:
      type: webhook                 # webhook | email | connector (or a plugin's channel type)
      answers_from: [feishu-main]   # connectors whose answers are copied here; ["*"] for all
      url: https://audit.example/hooks/assistant
      secret: ${AUDIT_WEBHOOK_SECRET}

Every answer still goes back to the chat it came from (the built-in `reply` channel); a routed channel gets a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..connectors.base import Connector
from ..errors import ConfigError
from ..messages import OutboundText
from ..registry import Kind, Registry
from ..settings import _read_yaml, expand_env
from .base import OutputChannel

CHANNELS_FILE = "channels.yaml"


@dataclass(frozen=True)
class RoutedChannel:
    channel: OutputChannel
    answers_from: frozenset[str]  # connector names, or {"*"}

    def wants(self, connector: str) -> bool:
        return "*" in self.answers_from or connector in self.answers_from

    def deliveries(self, part: OutboundText) -> list[tuple[OutputChannel, OutboundText]]:
        """The entries this channel's copy adds to a delivery plan: one per piece where the channel sends in pieces
        (a `pieces(part)` method, as the connector channel has), so each piece is checkpointed like a reply part."""
        pieces = getattr(self.channel, "pieces", None)
        return [(self.channel, p) for p in (pieces(part) if callable(pieces) else [part])]


def load_channels(config_dir: Path, registry: Registry, connectors: Mapping[str, Connector]) -> list[RoutedChannel]:
    path = config_dir / CHANNELS_FILE
    file = str(path)
    routed: list[RoutedChannel] = []
    for name, raw in _read_yaml(path).items():
        if not isinstance(raw, dict):
            raise ConfigError(file, str(name), "must be a mapping with at least `type`")
        options: dict[str, Any] = expand_env(dict(raw), file, str(name))
        kind = options.get("type")
        if not kind:
            raise ConfigError(file, f"{name}.type", "required key is missing")
        if kind == "reply":
            raise ConfigError(file, f"{name}.type", "reply is built in: every answer already goes back to its chat")
        sources = options.pop("answers_from", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ConfigError(file, f"{name}.answers_from", "must be a list of connector names, or ['*']")
        unknown = [s for s in sources if s != "*" and s not in connectors]
        if unknown:
            raise ConfigError(file, f"{name}.answers_from", f"no connector named {unknown[0]!r} in connectors.yaml")
        try:
            factory: Any = registry.get(Kind.CHANNEL, str(kind))
        except LookupError as exc:
            raise ConfigError(file, f"{name}.type", str(exc)) from None
        channel = factory.from_options(str(name), options, connectors, file)
        routed.append(RoutedChannel(channel, frozenset(sources)))
    return routed
