"""`ai-assistant probe`: the deploy gate's end-to-end check of one running instance (docs/runbooks/deploy.md).

It signs a `/help` message for the `platform: probe` connector and posts it to the instance's own port (not through
nginx), posts the identical delivery again, and passes when:
- the instance acknowledged both (its signature check, allowlist and queue took them),
- its own duplicates counter rose by one (the redelivery was de-duplicated, not queued),
- the answer was recorded in the shared store within the timeout (a worker answered it through the checkpoint and
  delivery path; /help needs no model, so a slow or absent model cannot fail a deploy that /readyz passed),
- and no second answer was recorded for the event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from ..errors import AssistantError, ConfigError
from ..pipeline.commands import HELP_HEADER
from ..settings import Settings, config_error, read_connectors_file
from ..store import open_store
from .probe import TWICE, ProbeConfig, record_key

PROBE_TEXT = "/help"


class ProbeFailed(AssistantError):
    """The instance did not process the probe as it must; the message names the step."""


@dataclass(frozen=True)
class ProbeResult:
    event_id: str
    seconds: float
    answered_by: str  # the version that recorded the answer (either colour's workers may take the job)


def _probe_connector(settings: Settings, name: str | None) -> tuple[str, ProbeConfig]:
    file, raw = read_connectors_file(settings.config_dir)
    probes = {n: o for n, o in raw.items() if o.get("platform") == "probe"}
    if not probes:
        raise ConfigError(
            file,
            "",
            "no connector with platform: probe (the assistant role adds it with assistant_deploy_probe: run site.yml)",
        )
    chosen = name or next(iter(probes))
    if chosen not in probes:
        raise ConfigError(file, chosen, "no such probe connector")
    try:
        config = ProbeConfig.model_validate(probes[chosen])
    except ValidationError as exc:
        raise config_error(file, exc, chosen) from None
    if not config.webhook_url:
        raise ConfigError(file, f"{chosen}.webhook_url", "required for the probe (its PATH is posted to)")
    return chosen, config


def _duplicates(metrics_url: str, connector: str) -> float:
    try:
        resp = httpx.get(metrics_url, timeout=10)
    except httpx.HTTPError as exc:
        raise ProbeFailed(f"cannot read {metrics_url}: {exc}") from None
    if resp.status_code != 200:
        raise ProbeFailed(f"{metrics_url} answered HTTP {resp.status_code}")
    for family in text_string_to_metric_families(resp.text):
        if family.name == "ai_assistant_duplicates":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("connector") == connector:
                    return float(sample.value)
    return 0.0


def _post(target: str, body: bytes, headers: dict[str, str], what: str) -> None:
    try:
        resp = httpx.post(target, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise ProbeFailed(f"{what}: cannot reach {target}: {exc}") from None
    if resp.status_code != 200:
        raise ProbeFailed(f"{what}: {target} answered HTTP {resp.status_code}: {resp.text[:200]}")


async def _wait_for_answer(settings: Settings, connector: str, event_id: str, wait_s: float) -> dict[str, object]:
    store = open_store(settings)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            found = await store.cache_get(connector, record_key(event_id, 1))
            if found is not None:
                twice = await store.cache_get(connector, f"{record_key(event_id, 1)}:{TWICE}")
                if twice is not None:
                    raise ProbeFailed(f"answer: {event_id} was answered twice (a redelivery was queued again)")
                record: dict[str, object] = json.loads(found)
                return record
            if time.monotonic() > deadline:
                raise ProbeFailed(f"answer: none recorded for {event_id} within {wait_s:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await store.close()


def run_probe(
    settings: Settings, url: str, metrics_url: str | None, connector: str | None, timeout: float
) -> ProbeResult:
    started = time.monotonic()
    name, config = _probe_connector(settings, connector)
    path = httpx.URL(config.webhook_url or "/").path
    target = url.rstrip("/") + path
    metrics = metrics_url or url.rstrip("/") + "/metrics"

    event_id = f"probe-{uuid.uuid4().hex[:16]}"
    who = "deploy-probe"
    body = json.dumps({"type": "message", "event_id": event_id, "chat_id": who, "user_id": who, "text": PROBE_TEXT})
    raw = body.encode()
    now = datetime.now(tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(config.app_secret.get_secret_value()).sign(event_id, now, body),
    }
    before = _duplicates(metrics, name)
    _post(target, raw, headers, "delivery")
    _post(target, raw, headers, "redelivery")
    counted = _duplicates(metrics, name) - before
    if counted != 1:
        raise ProbeFailed(f"redelivery: {metrics} counted {counted:g} duplicates of {event_id}, not 1")
    record = asyncio.run(_wait_for_answer(settings, name, event_id, timeout))
    text = str(record.get("text", ""))
    if not text.startswith(HELP_HEADER):
        raise ProbeFailed(f"answer: {event_id} was answered {text[:120]!r}, not with /help's list of commands")
    return ProbeResult(event_id, time.monotonic() - started, str(record.get("version", "?")))
