"""The small typed objects that cross layers: what came in, what goes out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field


class Attachment(BaseModel):
    """Non-text input (image, voice) that an input adapter turns into text."""

    kind: Literal["image", "voice", "file"]
    url: str | None = None
    data_b64: str | None = None
    mime_type: str | None = None
    # The platform's id of the file (Telegram file_id, Feishu image_key/file_key, a Slack file's private URL): the
    # worker has the connector download it (Connector.fetch_media) before an input adapter reads it.
    ref: str | None = None


class InboundMessage(BaseModel):
    """One user message, platform-neutral, as stored in the durable queue."""

    connector: str
    event_id: str
    chat_id: str
    user_id: str
    text: str
    is_group: bool = False
    mentioned: bool = True
    thread_id: str | None = None
    received_at: float = 0.0
    attachments: list[Attachment] = Field(default_factory=list)
    # Platform-specific routing needed to reply (e.g. a DingTalk sessionWebhook); never secrets.
    reply_context: dict[str, Any] = Field(default_factory=dict)
    # Extra ids the platform may re-deliver under (Feishu message_id next to event_id).
    alias_ids: list[str] = Field(default_factory=list)

    def dedupe_keys(self) -> list[str]:
        return [f"{self.connector}:{i}" for i in (self.event_id, *self.alias_ids)]

    @property
    def conversation_key(self) -> str:
        return f"{self.connector}:{self.chat_id}"

    def memory_key(self, scope: Literal["chat", "thread", "user"]) -> str:
        """The conversation memory this message continues. `chat`: the whole chat; `thread`: its thread (the chat
        outside threads); `user`: in groups, the sender's own history in that thread. A direct message without a
        thread keeps `conversation_key` under every scope, so a change of scope leaves such histories where they are."""
        key = self.conversation_key
        if scope != "chat" and self.thread_id:
            key += f":thread:{self.thread_id}"
        if scope == "user" and self.is_group:
            key += f":user:{self.user_id}"
        return key


@dataclass(frozen=True)
class OutboundText:
    """One part of an answer, ready for a connector's outbound API."""

    connector: str
    chat_id: str
    text: str
    part: int
    parts: int
    idempotency_key: str
    in_reply_to: InboundMessage | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ack:
    """What the edge answers the platform with, inside its deadline."""

    status_code: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    media_type: str = "application/json"


@dataclass(frozen=True)
class Feedback:
    """A user's rating of an answer (a reaction, a card button): feeds the satisfaction ratio."""

    event_id: str  # the platform's id of the feedback event, for de-duplication
    rating: Literal["positive", "negative"]


@dataclass(frozen=True)
class Verdict:
    """A connector's reading of a verified request: messages to enqueue (maybe none) and the ack to send."""

    messages: list[InboundMessage] = field(default_factory=list)
    ack: Ack = field(default_factory=Ack)
    handshake: bool = False
    feedback: list[Feedback] = field(default_factory=list)


@dataclass(frozen=True)
class RawRequest:
    """An inbound HTTP request as the platform sent it: signatures are checked over `body`, never re-serialised JSON."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    query: dict[str, str]
    body: bytes
    client_ip: str | None = None


ChatRole = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatTurn:
    role: ChatRole
    content: str
