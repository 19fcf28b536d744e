"""`type: connector`: push answers or notifications into a fixed chat of another configured connector.

For example, copy every answer given in a Feishu group into an audit chat on WeCom, or route alerts to an ops channel.
The part's idempotency key is prefixed with this channel's name, so the same answer sent to the reply chat and here
counts as two different messages for the receiving platform's de-duplication, and a retry of either as the same one.

The target platform may need the answer in several pieces. `pieces()` gives them up front so that the worker puts each
in its delivery plan and checkpoints it like a part of the reply: a retry after piece 2 failed starts at piece 2, and
piece 1 is not posted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..connectors.base import Connector
from ..errors import ConfigError, DeliveryFailed, DeliveryUncertain
from ..messages import OutboundText
from ..observability import DELIVERIES
from ..settings import config_error

M = TypeVar("M", bound=BaseModel)
_PIECE_OF = "piece_of"  # OutboundText.extra key: this is already one piece of the named channel's copy


def validate_channel_options(model: type[M], name: str, options: Mapping[str, object], file: str) -> M:
    """A channel's options from a config file, or one ConfigError line naming the file and `<channel>.<key>`.
    Shared by the webhook, email and connector channels' `from_options`."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise config_error(file, exc, name) from None


class ConnectorChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["connector"] = "connector"
    connector: str = Field(min_length=1, description="name of a connector in connectors.yaml")
    chat_id: str = Field(min_length=1, description="the chat on that platform to post into")
    prefix: str = Field("", max_length=200, description="text put before each first part, e.g. '[from Feishu] '")


class ConnectorChannel:
    def __init__(
        self, name: str, config: ConnectorChannelConfig, connectors: Mapping[str, Connector], file: str = "channels"
    ) -> None:
        if config.connector not in connectors:
            known = ", ".join(sorted(connectors)) or "none"
            raise ConfigError(file, f"{name}.connector", f"no connector named {config.connector!r} (known: {known})")
        self.name = name
        self.config = config
        self._connectors = connectors

    @classmethod
    def from_options(
        cls, name: str, options: Mapping[str, object], connectors: Mapping[str, Connector], file: str
    ) -> ConnectorChannel:
        return cls(name, validate_channel_options(ConnectorChannelConfig, name, options, file), connectors, file)

    def pieces(self, part: OutboundText) -> list[OutboundText]:
        """The sends this part becomes on the target platform, each deliverable (and checkpointed) on its own."""
        target = self._connectors[self.config.connector]
        text = f"{self.config.prefix}{part.text}" if part.part == 1 else part.text
        pieces = target.split(text)  # the target platform may have a smaller message limit than the source
        return [
            OutboundText(
                connector=self.config.connector,
                chat_id=self.config.chat_id,
                text=piece,
                part=part.part,
                parts=part.parts,
                idempotency_key=f"{self.name}:{part.idempotency_key}" + (f".{i}" if len(pieces) > 1 else ""),
                extra={_PIECE_OF: self.name},
            )
            for i, piece in enumerate(pieces, start=1)
        ]

    async def deliver(self, part: OutboundText) -> None:
        """One piece from `pieces()`, or a whole part (split and sent here, so a failure re-sends earlier pieces)."""
        target = self._connectors[self.config.connector]
        pieces = [part] if part.extra.get(_PIECE_OF) == self.name else self.pieces(part)
        try:
            for piece in pieces:
                await target.send(piece)
        except DeliveryUncertain:
            DELIVERIES.labels(connector=self.config.connector, outcome="unconfirmed").inc()
            raise
        except DeliveryFailed:
            DELIVERIES.labels(connector=self.config.connector, outcome="failed").inc()
            raise
        DELIVERIES.labels(connector=self.config.connector, outcome="sent").inc()
