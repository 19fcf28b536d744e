"""`type: email`: send answers or notifications by SMTP (aiosmtplib), with TLS verified and STARTTLS by default.

Each mail's Message-ID is derived from the part's idempotency key, so a retried delivery carries the same Message-ID and
mail clients and archives that de-duplicate on it show it once.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Literal

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ..connectors.base import Connector
from ..errors import DeliveryFailed
from ..messages import OutboundText
from ..observability import DELIVERIES
from .connector import validate_channel_options


def _address(value: str) -> str:
    if any(c in value for c in "\r\n"):
        raise ValueError("must not contain line breaks")
    _name, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


class EmailChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["email"] = "email"
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (587), implicit tls (465), or none (only for a relay on the same host)"
    )
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(description="From: address")
    to: list[str] = Field(min_length=1, max_length=100)
    subject: str = Field("Message from the AI assistant", max_length=200)
    ca_bundle: Path | None = Field(None, description="PEM bundle to trust instead of the system CAs (private relays)")
    timeout_seconds: float = Field(30.0, gt=0, le=300)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        return _address(v)

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        if any(c in v for c in "\r\n"):
            raise ValueError("must not contain line breaks")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> EmailChannelConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.security == "none" and self.password is not None:
            raise ValueError("security: none would send the password unencrypted; use starttls or tls")
        return self


class EmailChannel:
    def __init__(self, name: str, config: EmailChannelConfig) -> None:
        self.name = name
        self.config = config
        self._tls: ssl.SSLContext | None = None
        if config.security != "none":
            self._tls = ssl.create_default_context(cafile=str(config.ca_bundle) if config.ca_bundle else None)
        domain = parseaddr(config.sender)[1].rpartition("@")[2]
        self._domain = domain or "ai-assistant.invalid"

    @classmethod
    def from_options(
        cls, name: str, options: Mapping[str, object], connectors: Mapping[str, Connector], file: str
    ) -> EmailChannel:
        return cls(name, validate_channel_options(EmailChannelConfig, name, options, file))

    def message(self, part: OutboundText) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = ", ".join(self.config.to)
        suffix = f" ({part.part}/{part.parts})" if part.parts > 1 else ""
        msg["Subject"] = self.config.subject + suffix
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        digest = hashlib.sha256(f"{self.name}:{part.idempotency_key}".encode()).hexdigest()[:40]
        msg["Message-ID"] = f"<{digest}@{self._domain}>"
        msg.set_content(part.text)
        return msg

    async def deliver(self, part: OutboundText) -> None:
        cfg = self.config
        try:
            await aiosmtplib.send(
                self.message(part),
                hostname=cfg.host,
                port=cfg.port,
                username=cfg.username,
                password=cfg.password.get_secret_value() if cfg.password else None,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                tls_context=self._tls,
                timeout=cfg.timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            DELIVERIES.labels(connector=self.name, outcome="failed").inc()
            # The exception text can quote the server's reply, never our password; the class name is enough here.
            raise DeliveryFailed(
                f"channel {self.name}: SMTP {cfg.host}:{cfg.port} failed ({type(exc).__name__})"
            ) from None
        DELIVERIES.labels(connector=self.name, outcome="sent").inc()

    def secrets(self) -> list[str]:
        return [self.config.password.get_secret_value()] if self.config.password else []
