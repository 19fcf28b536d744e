"""The connector contract. A connector knows one platform's wire format: it turns a verified raw request into
InboundMessages plus the ack the platform expects, and it sends text back through the platform's API."""

from __future__ import annotations

import ipaddress
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..messages import Attachment, Feedback, InboundMessage, OutboundText, RawRequest, Verdict
from ..observability import DUPLICATES
from .media import MediaUnavailable
from .splitting import chars, split_text
from .streaming import StreamLink

log = logging.getLogger(__name__)


class Leases(Protocol):
    """The part of the state store that long connections use to keep one connection per bot across instances."""

    async def hold(self, key: str, holder: str, ttl: float) -> bool: ...

    async def let_go(self, key: str, holder: str) -> None: ...


# knowledge_only: a question the documents do not cover gets the canned no-hit answer, without the model;
# knowledge_first: it gets the model's general answer, marked as not from company documents; general: no retrieval.
AnswerMode = Literal["knowledge_only", "knowledge_first", "general"]
# Whose history a message continues: the whole chat's, its thread's, or (in groups) its sender's in that thread.
MemoryScope = Literal["chat", "thread", "user"]


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: MemoryScope = "user"


class ChatOverride(BaseModel):
    """Per-chat settings under `chats: {<chat id>: ...}`; a key left out keeps the connector's value."""

    model_config = ConfigDict(extra="forbid")

    answer_mode: AnswerMode | None = None
    memory: MemoryConfig | None = None


class ConnectorConfig(BaseModel):
    """Keys every platform shares. Platform configs subclass this with the platform's own key names."""

    model_config = ConfigDict(extra="forbid")

    platform: str
    webhook_url: str | None = Field(None, description="public URL the platform calls; the service routes its PATH")
    bot_name: str = "AI Assistant"
    api_base: str | None = Field(None, description="override the platform API base URL (proxies, tests)")
    allowed_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list, description="if set, only these source networks may call the webhook"
    )
    group_mention_only: bool = True
    http_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="how long an outbound call waits for the platform's answer (connect: 5 s)"
    )
    answer_mode: AnswerMode = "knowledge_first"
    general_answer_note: str | None = Field(
        None, max_length=500, description="the line that marks a knowledge_first general answer (default: built in)"
    )
    memory: MemoryConfig = MemoryConfig()
    chats: dict[str, ChatOverride] = Field(default_factory=dict)
    # Where the platform can edit a posted message (Slack, Feishu/Lark): post the answer's first words while the
    # model writes, then edit that message in place, at most once per interval and max_edits times in all.
    progressive_replies: bool = True
    progressive_interval_seconds: float = Field(1.0, ge=0.2, le=30)
    progressive_max_edits: int = Field(15, ge=1, le=100)
    media_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="largest image or voice file downloaded"
    )

    def answer_mode_for(self, chat_id: str) -> AnswerMode:
        override = self.chats.get(chat_id)
        return override.answer_mode if override and override.answer_mode else self.answer_mode

    def memory_scope_for(self, chat_id: str) -> MemoryScope:
        override = self.chats.get(chat_id)
        return override.memory.scope if override and override.memory else self.memory.scope


class Connector(ABC):
    platform: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    # Outbound size limit of one message and how the platform measures it.
    max_message_size: ClassVar[int] = 4000
    measure = staticmethod(chars)
    # HTTP methods the webhook route accepts (WeCom's URL check is a GET).
    methods: ClassVar[tuple[str, ...]] = ("POST",)
    # Whether post_editable() and edit() work on this platform (progressive replies, pipeline/progressive.py).
    editable: ClassVar[bool] = False
    # Whether operators add, edit and remove this platform's connectors in the admin console. False: the deploy roles
    # own them (the deploy gate's probe), and the console neither lists nor offers them.
    in_console: ClassVar[bool] = True

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        self.name = name
        self.config = config
        self._http: httpx.AsyncClient | None = None
        # Set by the app before start(): long-connection modes feed messages into the same de-duplicated queue.
        # Returns False when the message was a duplicate.
        self.sink: Callable[[InboundMessage], Awaitable[bool]] | None = None
        # Set by the app before start(): long connections count user feedback (reactions) through it, once each.
        self.feedback: Callable[[Feedback], Awaitable[None]] | None = None
        # Set by the app before start(), for long connections that must run on one instance only (Telegram).
        self.leases: Leases | None = None
        # The long connection's state (mode: stream), reported by /readyz and as metrics; None for webhooks.
        self.link: StreamLink | None = None

    @property
    def path(self) -> str | None:
        """The local route for the webhook: the PATH of `webhook_url` (None for long-connection-only connectors)."""
        if not self.config.webhook_url:
            return None
        return urlsplit(self.config.webhook_url).path or "/"

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            timeout = self.config.http_timeout_seconds
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)))
        return self._http

    def split(self, text: str) -> list[str]:
        return split_text(text, self.max_message_size, self.measure)

    @abstractmethod
    async def verify(self, request: RawRequest) -> Verdict:
        """Authenticate the raw request and read it. Raises a RejectedRequest subclass when it must not be processed."""

    @abstractmethod
    async def send(self, part: OutboundText) -> None:
        """Deliver one part. Must be idempotent on `part.idempotency_key`. Raises DeliveryFailed on failure."""

    async def post_editable(self, part: OutboundText) -> str:
        """Post `part` like send() and return the platform's id of the new message, for edit(). Editable
        platforms only."""
        raise NotImplementedError(f"{self.platform} cannot edit a posted message")

    async def edit(self, ref: str, part: OutboundText) -> None:
        """Replace the text of the message `ref` (from post_editable) with `part.text`. Editing to the same text
        twice does no harm, so a retry is safe. Raises DeliveryFailed on failure."""
        raise NotImplementedError(f"{self.platform} cannot edit a posted message")

    async def fetch_media(self, message: InboundMessage, attachment: Attachment) -> tuple[bytes, str]:
        """Download `attachment.ref` through the platform's API: (bytes, MIME type), at most config.media_max_bytes
        and checked to be the attachment's kind (connectors/media.py). Raises MediaUnavailable."""
        raise MediaUnavailable(f"{self.platform} attachments are not downloaded")

    async def queue(self, messages: Iterable[InboundMessage]) -> None:
        """For long connections, what the webhook edge does with a verified request's messages: skip group messages
        that do not mention the bot (group_mention_only), then de-duplicate and durably enqueue each through `sink`.
        Raises when the store cannot take one, so the caller leaves the event unacknowledged (the platform resends)."""
        for message in messages:
            if message.is_group and not message.mentioned and self.config.group_mention_only:
                continue
            if self.sink is None:
                raise RuntimeError("the queue is not open yet")
            if not await self.sink(message):
                DUPLICATES.labels(connector=self.name).inc()
                log.info("duplicate delivery of %s acknowledged", message.event_id)

    async def start(self) -> None:  # noqa: B027 (an optional hook, empty on purpose)
        """Open long-lived connections (long-connection modes). Webhook-only connectors need nothing."""

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def secrets(self) -> list[str]:
        """Secret values of this connector, for the log scrubber."""
        from ..settings import secret_values

        return secret_values(self.config)
