"""`platform: slack`: the Slack Events API over HTTP and chat.postMessage.

Inbound: X-Slack-Signature = "v0=" + hex(HMAC-SHA256(signing_secret, "v0:{ts}:{raw body}")), checked by slack_sdk's
SignatureVerifier (constant time) after our own 5-minute window on X-Slack-Request-Timestamp (so a stale request is
told apart from a forged one). Slack re-sends an unacknowledged event up to 3 times (X-Slack-Retry-Num), freshly
signed, so only the event_id catches it; a message seen both as `message` and `app_mention` shares channel+ts.
Feedback: a thumbs-up or thumbs-down reaction (`reaction_added`) on one of the bot's own messages counts once per
user, answer and rating, however often it is removed and added again.

Socket Mode (`mode: stream`, no public URL needed): slack_sdk's Socket Mode client (websockets) on a WebSocket that
apps.connections.open hands out for the app-level token. Each events_api envelope carries the same event_callback
body as the HTTP request (no signature: the socket was opened with the app token); it is read by the same code and
acknowledged by its envelope_id only after the durable enqueue, so an unacknowledged event that Slack sends again is
absorbed by the de-duplication on event_id. Slack spreads events over up to 10 connections of one app, one connection
per event, so every instance keeps its own (docs/adr/0072-long-connections.md).

Outbound: chat.postMessage with the bot token, in the question's thread in channels; about one message per second per
channel, with Retry-After honoured on HTTP 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, model_validator
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.websockets import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient
from websockets.exceptions import WebSocketException

from ..errors import DeliveryUncertain, MalformedRequest, RejectedRequest, SignatureInvalid
from ..messages import Ack, Attachment, Feedback, InboundMessage, OutboundText, RawRequest, Verdict
from .base import Connector, ConnectorConfig
from .common import check_window, inbound, load_json
from .media import MediaUnavailable, download, sniff
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, default_check, retry_after
from .streaming import StreamDown, StreamLink, supervise

log = logging.getLogger(__name__)
# apps.connections.open errors that mean the app-level token itself is refused: retrying cannot help until it is fixed.
_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "account_inactive", "not_allowed_token_type"})

WINDOW = 300  # Slack's own documented replay window; slack_sdk enforces the same
# Reaction names as Slack sends them (aliases included; a skin tone arrives as "+1::skin-tone-2").
RATINGS: dict[str, Literal["positive", "negative"]] = {
    "+1": "positive",
    "thumbsup": "positive",
    "-1": "negative",
    "thumbsdown": "negative",
}


class SlackConfig(ConnectorConfig, OutboundOptions):
    platform: Literal["slack"] = "slack"
    signing_secret: SecretStr | None = Field(
        None, description="Basic Information > App Credentials > Signing Secret; required for mode: webhook"
    )
    mode: Literal["webhook", "stream"] = Field("webhook", description="stream: no public URL, Slack's Socket Mode")
    app_token: SecretStr | None = Field(
        None, description="Basic Information > App-Level Tokens (xapp-..., scope connections:write); for mode: stream"
    )
    bot_token: SecretStr = Field(description="OAuth & Permissions > Bot User OAuth Token (xoxb-...)")
    bot_user_id: str | None = Field(None, description="the bot's user id (U...); read from each event when unset")
    reply_in_thread: bool = True
    rate_limit_per_second: float = Field(10.0, gt=0)
    chat_rate_limit_per_second: float | None = Field(1.0, gt=0)  # chat.postMessage: ~1/s per channel

    @model_validator(mode="after")
    def _credentials_for_mode(self) -> SlackConfig:
        if self.mode == "webhook" and self.signing_secret is None:
            raise ValueError("signing_secret: required with mode: webhook (it is how Slack's calls are recognised)")
        if self.mode == "stream" and self.app_token is None:
            raise ValueError("app_token: required with mode: stream (an xapp-... token with connections:write)")
        return self


class SlackConnector(Connector):
    platform: ClassVar[str] = "slack"
    Config = SlackConfig
    config: SlackConfig
    editable: ClassVar[bool] = True  # chat.update / PUT im/v1/messages/:id: progressive replies
    max_message_size: ClassVar[int] = 4000  # Slack advises 4,000 characters; longer text is truncated at 40,000

    def __init__(self, name: str, config: SlackConfig) -> None:
        super().__init__(name, config)
        self.api_base = (config.api_base or "https://slack.com/api").rstrip("/")
        self.api = PlatformAPI(name, config, lambda: self.http)
        secret = config.signing_secret
        self._verifier = SignatureVerifier(secret.get_secret_value()) if secret is not None else None
        self.link = StreamLink(name) if config.mode == "stream" else None
        self._socket: asyncio.Task[None] | None = None

    @property
    def path(self) -> str | None:
        return super().path if self.config.mode == "webhook" else None

    async def verify(self, request: RawRequest) -> Verdict:
        ts = request.headers.get("x-slack-request-timestamp")
        check_window(ts, WINDOW, header="X-Slack-Request-Timestamp")
        signature = request.headers.get("x-slack-signature")
        if not signature or self._verifier is None or not self._verifier.is_valid(request.body, ts, signature):
            raise SignatureInvalid("X-Slack-Signature does not match the body")
        return self.read(load_json(request.body))

    def read(self, payload: dict[str, Any]) -> Verdict:
        """An Events API body (the HTTP request's, or a Socket Mode envelope's payload) -> Verdict."""
        kind = payload.get("type")
        if kind == "url_verification":
            challenge = payload.get("challenge")
            if not isinstance(challenge, str):
                raise MalformedRequest("challenge: required field is missing")
            return Verdict(ack=Ack(200, {"challenge": challenge}), handshake=True)
        if kind != "event_callback":
            return Verdict()
        event = payload.get("event")
        event_id = payload.get("event_id")
        if not isinstance(event, dict) or not isinstance(event_id, str):
            raise MalformedRequest("event and event_id are required in an event_callback")
        if event.get("type") == "reaction_added":
            feedback = self._feedback(event, payload)
            return Verdict(feedback=[feedback] if feedback else [])
        message = self._message(event_id, event, payload)
        return Verdict(messages=[message] if message else [])

    # ------------------------------------------------------------------------------------------------ Socket Mode
    async def start(self) -> None:
        if self.link is not None and self._socket is None:
            self._socket = asyncio.create_task(supervise(self.link, self._session), name=f"slack-socket-{self.name}")

    async def aclose(self) -> None:
        if self._socket is not None:
            self._socket.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._socket
            self._socket = None
        await super().aclose()

    async def _session(self) -> None:
        """One Socket Mode client until its connection is lost. The SDK's own reconnection is off (it retries on a
        fixed interval without reporting): supervise() reconnects with jittered back-off instead. A `disconnect`
        frame (Slack refreshing the connection) is still handled by the SDK, which moves to a new URL in place."""
        assert self.link is not None
        assert self.config.app_token is not None
        client = SocketModeClient(
            app_token=self.config.app_token.get_secret_value(),
            web_client=AsyncWebClient(base_url=f"{self.api_base}/", timeout=int(self.config.http_timeout_seconds)),
            auto_reconnect_enabled=False,
            logger=log,
        )
        client.message_listeners.append(self._on_frame)
        try:
            try:
                await client.connect()  # type: ignore[no-untyped-call]
            except SlackApiError as exc:
                error = str(exc.response.get("error", "")) if exc.response is not None else ""
                if error in (
                    "invalid_auth",
                    "not_authed",
                    "token_revoked",
                    "account_inactive",
                    "not_allowed_token_type",
                ):
                    raise StreamDown(
                        "unauthorized",
                        f"apps.connections.open: {error}: app_token is wrong or was revoked "
                        "(an app-level xapp-... token with connections:write, Socket Mode enabled)",
                    ) from None
                raise StreamDown("disconnected", f"apps.connections.open: {error or type(exc).__name__}") from None
            except (TimeoutError, OSError, WebSocketException) as exc:
                raise StreamDown("disconnected", f"Socket Mode connection: {type(exc).__name__}") from None
            while await client.is_connected():  # noqa: ASYNC110 (the SDK has no event for a closed session)
                await asyncio.sleep(1.0)
            raise StreamDown("disconnected", "Slack closed the Socket Mode connection")
        finally:
            await client.close()  # type: ignore[no-untyped-call]

    async def _on_frame(self, client: AsyncBaseSocketModeClient, frame: dict[str, Any], raw: str | None) -> None:
        assert self.link is not None
        kind = frame.get("type")
        if kind == "hello":
            self.link.connected()
            return
        envelope = frame.get("envelope_id")
        if kind is None or not isinstance(envelope, str):
            self.link.problem(
                "malformed", f"a frame that is not a Socket Mode envelope was ignored ({kind or 'no type'})"
            )
            return
        if kind != "events_api":
            # Interactivity and slash commands are not used by this connector: acknowledged so Slack does not retry.
            await client.send_socket_mode_response({"envelope_id": envelope})
            return
        payload = frame.get("payload")
        try:
            verdict = self.read(payload if isinstance(payload, dict) else {})
        except RejectedRequest as exc:
            self.link.problem("malformed", f"envelope {envelope} skipped: {exc.detail}")
            await client.send_socket_mode_response({"envelope_id": envelope})  # a retry cannot fix it
            return
        try:
            await self.queue(verdict.messages)
            for feedback in verdict.feedback:
                if self.feedback is not None:
                    await self.feedback(feedback)
        except Exception as exc:  # not acknowledged: Slack sends the event again, and the store may be back by then
            self.link.problem("store", f"envelope {envelope} not queued ({type(exc).__name__}); Slack will retry it")
            return
        await client.send_socket_mode_response({"envelope_id": envelope})

    # ------------------------------------------------------------------------------------------------ feedback
    def _feedback(self, event: dict[str, Any], payload: dict[str, Any]) -> Feedback | None:
        """A thumbs-up/down on the bot's own message; any other reaction, or one on somebody else's message, is not
        feedback on an answer."""
        item, user, reaction = event.get("item"), event.get("user"), event.get("reaction")
        if not (isinstance(item, dict) and isinstance(user, str) and isinstance(reaction, str)):
            raise MalformedRequest("event: item, user and reaction are required in reaction_added")
        rating = RATINGS.get(reaction.split("::", 1)[0])
        bot = self._bot_user(payload)
        if rating is None or item.get("type") != "message" or bot is None or event.get("item_user") != bot:
            return None
        channel, ts = item.get("channel"), item.get("ts")
        if not (isinstance(channel, str) and isinstance(ts, str)):
            raise MalformedRequest("event.item: channel and ts are required")
        # Keyed on who rated which answer how, not on Slack's event id: removing and adding the reaction again
        # produces a new event, and must not count twice.
        return Feedback(f"reaction:{channel}:{ts}:{user}:{rating}", rating)

    def _bot_user(self, payload: dict[str, Any]) -> str | None:
        if self.config.bot_user_id:
            return self.config.bot_user_id
        for auth in payload.get("authorizations") or []:
            if isinstance(auth, dict) and auth.get("is_bot") and isinstance(auth.get("user_id"), str):
                return str(auth["user_id"])
        return None

    def _message(self, event_id: str, event: dict[str, Any], payload: dict[str, Any]) -> InboundMessage | None:
        kind = event.get("type")
        if kind not in ("message", "app_mention"):
            return None
        # Edits, joins, bot posts (our own answers included): never answered, or the bot would talk to itself. A
        # message with files (`file_share`) is a user's message like any other.
        if event.get("subtype") not in (None, "file_share") or event.get("bot_id"):
            return None
        bot = self._bot_user(payload)
        user, channel, ts, text = event.get("user"), event.get("channel"), event.get("ts"), event.get("text")
        if user == bot:
            return None
        if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str) and isinstance(text, str)):
            raise MalformedRequest("event: user, channel, ts and text are required")
        mention = f"<@{bot}>" if bot else None
        mentioned = kind == "app_mention" or bool(mention and mention in text)
        if mention:
            text = text.replace(mention, "")
        is_group = kind == "app_mention" or event.get("channel_type") not in ("im", None)
        thread = event.get("thread_ts") or (ts if is_group and self.config.reply_in_thread else None)
        return inbound(
            connector=self.name,
            event_id=event_id,
            alias_ids=[f"ts:{channel}:{ts}"],
            chat_id=channel,
            user_id=user,
            text=re.sub(r"[ \t]+", " ", text).strip(),
            is_group=is_group,
            mentioned=mentioned or not is_group,
            thread_id=thread if isinstance(thread, str) else None,
            attachments=_attachments(event),
        )

    async def fetch_media(self, message: InboundMessage, attachment: Attachment) -> tuple[bytes, str]:
        # The bot token goes only to Slack's file host (or the configured API host: a proxy, the tests' stand-in).
        url = attachment.ref or ""
        where, api = urlsplit(url), urlsplit(self.api_base)
        on_slack = where.scheme == "https" and where.hostname == "files.slack.com"
        if not on_slack and (where.scheme, where.netloc) != (api.scheme, api.netloc):
            raise MediaUnavailable("the file is not on Slack's file host")
        headers = {"Authorization": f"Bearer {self.config.bot_token.get_secret_value()}"}
        data, declared = await download(self.http, url, self.config.media_max_bytes, headers=headers)
        return data, sniff(attachment.kind, data, declared)

    async def send(self, part: OutboundText) -> None:
        await self._post(part)

    async def post_editable(self, part: OutboundText) -> str:
        ts = (await self._post(part)).get("ts")
        if not isinstance(ts, str):
            raise DeliveryUncertain("chat.postMessage: the answer carries no ts")
        return ts

    async def edit(self, ref: str, part: OutboundText) -> None:
        await self.api.call(
            "POST",
            f"{self.api_base}/chat.update",
            endpoint="chat.update",
            chat=part.chat_id,
            headers={"Authorization": f"Bearer {self.config.bot_token.get_secret_value()}"},
            json={"channel": part.chat_id, "ts": ref, "text": part.text},
            check=_check,
            idempotent=True,  # setting the same text twice shows the user nothing new
        )

    async def _post(self, part: OutboundText) -> Any:
        body: dict[str, Any] = {"channel": part.chat_id, "text": part.text}
        thread = part.in_reply_to.thread_id if part.in_reply_to else None
        if thread:
            body["thread_ts"] = thread
        return await self.api.call(
            "POST",
            f"{self.api_base}/chat.postMessage",
            endpoint="chat.postMessage",
            chat=part.chat_id,
            headers={"Authorization": f"Bearer {self.config.bot_token.get_secret_value()}"},
            json=body,
            check=_check,
        )


def _attachments(event: dict[str, Any]) -> list[Attachment]:
    """Images and audio clips (voice clips are audio files in Slack) shared in the message, by private URL."""
    found: list[Attachment] = []
    for file in event.get("files") or []:
        if not isinstance(file, dict):
            continue
        mime = str(file.get("mimetype") or "")
        url = file.get("url_private_download") or file.get("url_private")
        kind = "image" if mime.startswith("image/") else "voice" if mime.startswith(("audio/", "video/webm")) else None
        if kind and isinstance(url, str):
            found.append(Attachment(kind=kind, ref=url, mime_type=mime))
    return found


def _check(resp: httpx.Response) -> Any:
    if resp.status_code == 429:
        raise Retry("HTTP 429", retry_after(resp), throttled=True)
    body = default_check(resp)
    if not isinstance(body, dict) or body.get("ok") is not True:
        error = body.get("error") if isinstance(body, dict) else "not a Slack answer"
        if error == "ratelimited":
            raise Retry("ratelimited", throttled=True)
        raise Fatal(f"error {error}")
    return body
