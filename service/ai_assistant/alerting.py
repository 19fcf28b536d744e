"""Alertmanager's webhook into the team's chat: `POST /api/alerts` takes Alertmanager's webhook JSON (version 4),
turns each notification (one alert group) into one short text and posts it through one of our own connectors, so
Feishu, DingTalk, WeCom, Slack and Telegram receive alerts with no extra software.

The endpoint is authenticated with a bearer token (Alertmanager's `http_config.authorization.credentials_file`);
answers are JSON on every path: 401 bad token, 400 bad payload, 413 too large, 502 when the chat platform refused
the message (Alertmanager retries on 5xx), 200 when posted or already posted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .credentials import BearerTokens
from .edge import read_body
from .errors import ConfigError, DeliveryFailed, MalformedRequest, PayloadTooLarge
from .settings import AlertsSettings, is_placeholder

log = logging.getLogger(__name__)

AlertNotifier = Callable[[str, str, str, str], Awaitable[None]]
"""`await notify(connector_name, chat_id, text, idempotency_key)`; the same key is posted at most once."""

MAX_BODY_BYTES = 256 * 1024  # Alertmanager sends at most `max_alerts` (20 in our config) alerts per notification
MAX_LISTED = 5  # alerts listed by name in one chat message; the rest are counted
MAX_LINE = 300  # characters of one summary; annotations are ours, but a label value can be long


class _Model(BaseModel):
    # Alertmanager may add fields in later versions; what we read is checked, the rest ignored.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class AMAlert(_Model):
    """One alert as Alertmanager sends it (its camelCase field names, so no aliasing is needed)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class AMWebhook(_Model):
    """Alertmanager webhook payload, version 4 (prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AMAlert] = Field(min_length=1)


def _clip(text: str, limit: int = MAX_LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_group(hook: AMWebhook) -> str:
    """One short text per notification: status, severity, what, and where the runbook is."""
    firing = [a for a in hook.alerts if a.status == "firing"]
    resolved = [a for a in hook.alerts if a.status == "resolved"]
    name = hook.commonLabels.get("alertname") or hook.groupLabels.get("alertname") or "alerts"
    severity = hook.commonLabels.get("severity") or "/".join(
        sorted({a.labels.get("severity", "none") for a in hook.alerts})
    )
    service = hook.commonLabels.get("service")
    total = len(hook.alerts) + hook.truncatedAlerts
    head = f"[{hook.status.upper()}] {severity}: {name}" + (f" ({service})" if service else "")
    if total > 1:
        head += f" — {len(firing)} firing, {len(resolved)} resolved" if hook.status == "firing" else f" — {total}"
    lines = [head]
    listed = (firing + resolved)[:MAX_LISTED]
    for alert in listed:
        summary = alert.annotations.get("summary") or alert.labels.get("alertname", "")
        mark = "" if alert.status == hook.status else f"({alert.status}) "
        lines.append(f"- {mark}{_clip(summary)}")
    if total > len(listed):
        lines.append(f"- … and {total - len(listed)} more")
    if hook.status == "firing":
        runbooks = sorted({a.annotations["runbook_url"] for a in firing if a.annotations.get("runbook_url")})
        lines.extend(f"Runbook: {url}" for url in runbooks[:2])
    return "\n".join(lines)


def idempotency_key(hook: AMWebhook) -> str:
    """Group key + status + the alerts in it. Alertmanager's retries and repeats of an unchanged group give the same
    key (posted once); an alert joining or leaving the group changes it, so the team sees that change."""
    members = sorted(f"{a.fingerprint or json.dumps(a.labels, sort_keys=True)}:{a.status}" for a in hook.alerts)
    digest = hashlib.sha256("\n".join([hook.groupKey, hook.status, *members]).encode()).hexdigest()[:32]
    return f"alert:{digest}"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def alert_router(
    settings: AlertsSettings,
    notify: AlertNotifier,
    *,
    connectors: Collection[str] | None = None,
    path: str = "/api/alerts",
    source: str = "assistant.yaml",
    tokens: BearerTokens | None = None,
) -> APIRouter:
    """The router for `POST <path>`. Refuses, with one ConfigError line, settings it could not work with:
    no token, a placeholder token, no target connector or chat, or a connector that is not configured."""
    if settings.token is None or not settings.token.get_secret_value().strip():
        raise ConfigError(
            source, "alerts.token", "required to accept Alertmanager's webhook (AI_ASSISTANT_ALERTS__TOKEN)"
        )
    token = settings.token.get_secret_value().strip()
    if is_placeholder(token) or len(token) < 16:
        raise ConfigError(source, "alerts.token", "must be a real secret of at least 16 characters")
    if not settings.connector:
        raise ConfigError(source, "alerts.connector", "required: the connector that posts alerts into the chat")
    if not settings.chat_id:
        raise ConfigError(source, "alerts.chat_id", "required: the chat that receives alerts")
    if connectors is not None and settings.connector not in connectors:
        raise ConfigError(source, "alerts.connector", f"no connector named {settings.connector!r} in connectors.yaml")
    expected = f"Bearer {token}".encode()
    connector, chat_id = settings.connector, settings.chat_id
    router = APIRouter()

    @router.post(path, response_model=None)
    async def receive_alerts(request: Request, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        # Constant-time compare over the whole header value, before the body is read.
        accepted = (
            tokens.check(authorization)
            if tokens is not None
            else hmac.compare_digest((authorization or "").encode(), expected)
        )
        if not accepted:
            return _error(401, "missing or wrong bearer token")
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except PayloadTooLarge:
            return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        except MalformedRequest as exc:  # the sender hung up mid-body: nobody reads this answer, nothing is sent
            return _error(400, exc.detail)
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"body is not JSON ({exc.__class__.__name__})")
        try:
            hook = AMWebhook.model_validate(payload)
        except ValidationError as exc:
            return _error(400, _first_problem(exc))
        key = idempotency_key(hook)
        try:
            await notify(connector, chat_id, format_group(hook), key)
        except DeliveryFailed as exc:
            log.warning("alert notification to connector %s failed: %s", connector, exc)
            return _error(502, f"posting to connector {connector!r} failed; Alertmanager will retry")
        log.info(
            "alert group posted", extra={"connector": connector, "status": hook.status, "alerts": len(hook.alerts)}
        )
        return JSONResponse({"status": "posted", "alerts": len(hook.alerts), "idempotency_key": key})

    return router


__all__ = ["AMAlert", "AMWebhook", "AlertNotifier", "alert_router", "format_group", "idempotency_key"]
