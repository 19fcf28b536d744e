"""`platform: slack`: the Slack Events API over HTTP and chat.postMessage.

Inbound: X-Slack-Signature = "v0=" + hex(HMAC-SHA256(signing_secret, "v0:{ts}:{raw body}")), checked by slack_sdk's
SignatureVerifier (constant time) after our own 5-minute window on X-Slack-Request-Timestamp (so a stale request is
told apart from a forged one). Slack re-sends an unacknowledged event up to 3 times (X-Slack-Retry-Num), freshly
signed, so only the event_id catches it; a message seen both as `message` and `app_mention` shares channel+ts.
Feedback: a thumbs-up or thumbs-down reaction (`reaction_added`) on one of the bot's own messages counts once per
user, answer and rating, however often it is removed and added again.

Outbound: chat.postMessage with the bot token, in the question's thread in channels; about one message per second per
channel, with Retry-After honoured on HTTP 429.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr
from slack_sdk.signature import SignatureVerifier

from ..errors import MalformedRequest, SignatureInvalid
from ..messages import Ack, Feedback, InboundMessage, OutboundText, RawRequest, Verdict
from .base import Connector, ConnectorConfig
from .common import check_window, inbound, load_json
from .outbound import Fatal, OutboundOptions, PlatformAPI, Retry, default_check, retry_after

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
    signing_secret: SecretStr = Field(description="Basic Information > App Credentials > Signing Secret")
    bot_token: SecretStr = Field(description="OAuth & Permissions > Bot User OAuth Token (xoxb-...)")
    bot_user_id: str | None = Field(None, description="the bot's user id (U...); read from each event when unset")
    reply_in_thread: bool = True
    rate_limit_per_second: float = Field(10.0, gt=0)
    chat_rate_limit_per_second: float | None = Field(1.0, gt=0)  # chat.postMessage: ~1/s per channel


class SlackConnector(Connector):
    platform: ClassVar[str] = "slack"
    Config = SlackConfig
    config: SlackConfig
    max_message_size: ClassVar[int] = 4000  # Slack advises 4,000 characters; longer text is truncated at 40,000

    def __init__(self, name: str, config: SlackConfig) -> None:
        super().__init__(name, config)
        self.api_base = (config.api_base or "https://slack.com/api").rstrip("/")
        self.api = PlatformAPI(name, config, lambda: self.http)
        self._verifier = SignatureVerifier(config.signing_secret.get_secret_value())

    async def verify(self, request: RawRequest) -> Verdict:
        ts = request.headers.get("x-slack-request-timestamp")
        check_window(ts, WINDOW, header="X-Slack-Request-Timestamp")
        signature = request.headers.get("x-slack-signature")
        if not signature or not self._verifier.is_valid(request.body, ts, signature):
            raise SignatureInvalid("X-Slack-Signature does not match the body")
        payload = load_json(request.body)
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
        # Edits, joins, bot posts (our own answers included): never answered, or the bot would talk to itself.
        if event.get("subtype") or event.get("bot_id"):
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
        )

    async def send(self, part: OutboundText) -> None:
        body: dict[str, Any] = {"channel": part.chat_id, "text": part.text}
        thread = part.in_reply_to.thread_id if part.in_reply_to else None
        if thread:
            body["thread_ts"] = thread
        await self.api.call(
            "POST",
            f"{self.api_base}/chat.postMessage",
            endpoint="chat.postMessage",
            chat=part.chat_id,
            headers={"Authorization": f"Bearer {self.config.bot_token.get_secret_value()}"},
            json=body,
            check=_check,
        )


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
