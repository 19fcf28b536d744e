"""`type: connector`: push answers or notifications into a fixed chat of another configured connector.

For example, copy every answer given in a Feishu group into an audit chat on WeCom, or route alerts to an ops channel.
The part's idempotency key is prefixed with this channel's name, so the same answer sent to the reply chat and here
counts as two different messages for the receiving platform's de-duplication, and a retry of either as the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..connectors.base import Connector
from ..errors import ConfigError, DeliveryFailed
from ..messages import OutboundText
from ..observability import DELIVERIES
from ..settings import config_error

M = TypeVar("M", bound=BaseModel)


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

    async def deliver(self, part: OutboundText) -> None:
        target = self._connectors[self.config.connector]
        text = f"{self.config.prefix}{part.text}" if part.part == 1 else part.text
        pieces = target.split(text)  # the target platform may have a smaller message limit than the source
        try:
            for i, piece in enumerate(pieces, start=1):
                key = f"{self.name}:{part.idempotency_key}" + (f".{i}" if len(pieces) > 1 else "")
                await target.send(
                    OutboundText(
                        connector=self.config.connector,
                        chat_id=self.config.chat_id,
                        text=piece,
                        part=part.part,
                        parts=part.parts,
                        idempotency_key=key,
                    )
                )
        except DeliveryFailed:
            DELIVERIES.labels(connector=self.config.connector, outcome="failed").inc()
            raise
        DELIVERIES.labels(connector=self.config.connector, outcome="sent").inc()
