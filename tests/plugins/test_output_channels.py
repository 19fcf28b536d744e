"""Output channels against real servers on loopback: a Standard Webhooks receiver (tests.helpers.ReplyReceiver, which
verifies signatures with the standardwebhooks package), a real SMTP server (aiosmtpd) with STARTTLS and AUTH, and the
real generic-IM connector for pushing into another configured connector's chat."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip(
    "aiosmtplib", reason="aiosmtplib (the email channel's client) is not installed; run scripts/bootstrap"
)
pytest.importorskip("aiosmtpd", reason="aiosmtpd (the test SMTP server) is not installed; run scripts/bootstrap")
pytest.importorskip("trustme", reason="trustme (a dev dependency) is not installed; run scripts/bootstrap")

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from ai_assistant.channels.base import OutputChannel
from ai_assistant.channels.connector import ConnectorChannel, ConnectorChannelConfig
from ai_assistant.channels.email import EmailChannel, EmailChannelConfig
from ai_assistant.channels.webhook import WebhookChannel, WebhookChannelConfig
from ai_assistant.connectors.generic_im import GenericIMConfig, GenericIMConnector
from ai_assistant.errors import ConfigError, DeliveryFailed
from ai_assistant.messages import InboundMessage, OutboundText
from tests.helpers import SECRET, ReplyReceiver, free_port

ORIGIN = InboundMessage(connector="feishu", event_id="evt-9", chat_id="group-1", user_id="u", text="q")


def part(text: str = "答案 answer", n: int = 1, of: int = 1) -> OutboundText:
    return OutboundText("feishu", "group-1", text, n, of, f"evt-9:{n}", in_reply_to=ORIGIN)


# --------------------------------------------------------------------------------------------------------------
# Signed webhook
# --------------------------------------------------------------------------------------------------------------
def test_webhook_posts_a_signed_part(receiver: ReplyReceiver) -> None:
    channel = WebhookChannel("ops-hook", WebhookChannelConfig(url=receiver.url, secret=SECRET))
    assert isinstance(channel, OutputChannel)

    async def go() -> None:
        await channel.deliver(part())
        await channel.aclose()

    asyncio.run(go())
    assert receiver.rejected == 0
    [got] = receiver.received
    assert got["webhook_id"] == "evt-9:1"
    assert (got["type"], got["text"], got["chat_id"], got["in_reply_to"]) == (
        "answer",
        "答案 answer",
        "group-1",
        "evt-9",
    )


def test_webhook_failures_raise_delivery_failed(receiver: ReplyReceiver) -> None:
    other = "whsec_" + "b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMh"
    wrong = WebhookChannel("h", WebhookChannelConfig(url=receiver.url, secret=other))
    with pytest.raises(DeliveryFailed, match="webhook answered HTTP 401"):
        asyncio.run(wrong.deliver(part()))
    assert receiver.rejected == 1
    down = WebhookChannel("h", WebhookChannelConfig(url=f"http://127.0.0.1:{free_port()}/", secret=SECRET))
    with pytest.raises(DeliveryFailed, match="webhook unreachable"):
        asyncio.run(down.deliver(part()))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"url": "http://x/", "secret": "plain"}, "starting with whsec_"),
        ({"url": "http://x/", "secret": "whsec_!!!"}, "not valid base64"),
        ({"url": "ftp://x/", "secret": SECRET}, "String should match pattern"),
        ({"url": "http://x/", "secret": SECRET, "extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_webhook_config_errors(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        WebhookChannelConfig.model_validate(options)


# --------------------------------------------------------------------------------------------------------------
# Email over a real SMTP server
# --------------------------------------------------------------------------------------------------------------
class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.messages.append((envelope, bytes(envelope.original_content or envelope.content or b"")))
        return "250 OK"


def _auth(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"assistant", b"smtp-pass-123456")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd itself answers 535 on failure


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    ca_pem = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=ctx,
        require_starttls=True,
        authenticator=_auth,
        auth_require_tls=True,
        ready_timeout=10,
    )
    # aiosmtpd's readiness probe speaks plain SMTP to a server that insists on STARTTLS; that is fine for the probe.
    controller.start()
    try:
        yield inbox, port, ca_pem
    finally:
        controller.stop()


def email_config(smtp_port: int, ca_pem: Path | None, **kw: Any) -> EmailChannelConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": smtp_port,
        "username": "assistant",
        "password": "smtp-pass-123456",
        "sender": "AI Assistant <assistant@corp.example>",
        "to": ["ops@corp.example", "audit@corp.example"],
        "subject": "AI assistant answer",
        "ca_bundle": ca_pem,
        **kw,
    }
    return EmailChannelConfig.model_validate(values)


def test_email_with_starttls_and_auth(smtp: tuple[Inbox, int, Path]) -> None:
    inbox, port, ca_pem = smtp
    channel = EmailChannel("mail", email_config(port, ca_pem))
    asyncio.run(channel.deliver(part("第一部分 part one", 1, 2)))
    asyncio.run(channel.deliver(part("第一部分 part one", 1, 2)))  # a retry of the same part
    assert len(inbox.messages) == 2
    (env1, raw1), (_env2, raw2) = inbox.messages
    assert env1.rcpt_tos == ["ops@corp.example", "audit@corp.example"]
    assert env1.mail_from == "assistant@corp.example"
    m1, m2 = message_from_bytes(raw1), message_from_bytes(raw2)
    assert m1["Subject"] == "AI assistant answer (1/2)"
    assert m1["Message-ID"] == m2["Message-ID"]  # the retry is recognisable as the same mail
    assert m1["Message-ID"].endswith("@corp.example>")
    body = m1.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "第一部分 part one" in body.decode("utf-8")


def test_email_failures_do_not_leak_the_password(smtp: tuple[Inbox, int, Path]) -> None:
    inbox, port, ca_pem = smtp
    wrong = EmailChannel("mail", email_config(port, ca_pem, password="wrong-password-999"))
    with pytest.raises(DeliveryFailed) as err:
        asyncio.run(wrong.deliver(part()))
    assert "SMTPAuthenticationError" in str(err.value)
    assert "wrong-password-999" not in str(err.value)
    untrusted = EmailChannel("mail", email_config(port, None))  # the test CA is not among the system's
    with pytest.raises(DeliveryFailed, match=r"SMTP 127\.0\.0\.1:\d+ failed \(SSLCertVerificationError\)"):
        asyncio.run(untrusted.deliver(part()))
    closed = EmailChannel("mail", email_config(free_port(), ca_pem))
    with pytest.raises(DeliveryFailed, match="failed"):
        asyncio.run(closed.deliver(part()))
    assert inbox.messages == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"subject": "hi\r\nBcc: victim@x"}, "must not contain line breaks"),
        ({"to": ["ops@corp.example\nBcc: x@y"]}, "must not contain line breaks"),
        ({"to": ["not-an-address"]}, "is not an e-mail address"),
        ({"to": []}, "at least 1 item"),
        ({"security": "none"}, "would send the password unencrypted"),
        ({"password": None}, "username and password go together"),
        ({"port": 70000}, "less than or equal to 65535"),
    ],
)
def test_email_config_errors(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        email_config(587, None, **change)


# --------------------------------------------------------------------------------------------------------------
# Push to another configured connector
# --------------------------------------------------------------------------------------------------------------
def test_push_into_another_connectors_chat(receiver: ReplyReceiver) -> None:
    ops = GenericIMConnector("ops-im", GenericIMConfig(app_secret=SECRET, reply_url=receiver.url))
    channel = ConnectorChannel(
        "audit-copy",
        ConnectorChannelConfig(connector="ops-im", chat_id="ops-room", prefix="[feishu/group-1] "),
        {"ops-im": ops},
    )

    async def go() -> None:
        await channel.deliver(part("first", 1, 2))
        await channel.deliver(part("second", 2, 2))
        await ops.aclose()

    asyncio.run(go())
    assert receiver.rejected == 0
    got = [(r["chat_id"], r["text"], r["webhook_id"]) for r in receiver.received]
    assert got == [
        ("ops-room", "[feishu/group-1] first", "audit-copy:evt-9:1"),
        ("ops-room", "second", "audit-copy:evt-9:2"),
    ]


def test_push_to_connector_failures(receiver: ReplyReceiver) -> None:
    with pytest.raises(ConfigError, match=r"audit-copy.connector: no connector named 'nope' \(known: ops-im\)"):
        ConnectorChannel("audit-copy", ConnectorChannelConfig(connector="nope", chat_id="c"), {"ops-im": object()})  # type: ignore[dict-item]
    receiver.status = 500
    ops = GenericIMConnector("ops-im", GenericIMConfig(app_secret=SECRET, reply_url=receiver.url))
    channel = ConnectorChannel("audit-copy", ConnectorChannelConfig(connector="ops-im", chat_id="c"), {"ops-im": ops})
    with pytest.raises(DeliveryFailed, match="HTTP 500"):
        asyncio.run(channel.deliver(part()))


# --------------------------------------------------------------------------------------------------------------
# Building channels from a configuration file's options
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "options", "expected"),
    [
        (
            WebhookChannel,
            {"type": "webhook", "url": "https://h/", "secret": "hunter22"},
            "ops.secret: must be a Standard",
        ),
        (WebhookChannel, {"type": "webhook", "secret": SECRET}, "ops.url: required key is missing"),
        (EmailChannel, {"type": "email", "hots": "x"}, "ops.hots: unknown key"),
        (
            EmailChannel,
            {"type": "email", "host": "h", "sender": "a@b.c", "to": ["x"]},
            "ops.to: 'x' is not an e-mail",
        ),
        (ConnectorChannel, {"type": "connector", "connector": "ops-im"}, "ops.chat_id: required key is missing"),
        (ConnectorChannel, {"type": "connector", "connector": "nope", "chat_id": "c"}, "ops.connector: no connector"),
    ],
)
def test_from_options_errors_name_file_and_key(cls: Any, options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        cls.from_options("ops", options, {"ops-im": object()}, "config/channels.yaml")
    assert str(err.value).startswith("config/channels.yaml: ")
    assert expected in str(err.value)
    assert "hunter22" not in str(err.value)


def test_from_options_builds_working_channels(receiver: ReplyReceiver) -> None:
    hook = WebhookChannel.from_options(
        "ops", {"type": "webhook", "url": receiver.url, "secret": SECRET}, {}, "config/channels.yaml"
    )
    asyncio.run(hook.deliver(part("via options")))
    assert [r["text"] for r in receiver.received] == ["via options"]
    mail = EmailChannel.from_options(
        "mail", {"type": "email", "host": "smtp.corp", "sender": "a@corp.example", "to": ["b@corp.example"]}, {}, "f"
    )
    assert mail.config.security == "starttls"
