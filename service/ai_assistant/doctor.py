"""`ai-assistant doctor` and `/readyz?verbose`: every check of the running configuration, one line each, with what it
means and what to do (docs/runbooks/doctor.md has a section per check).

It never changes state. SQLite files are opened read-only, and as immutable when no process holds them: a read-only
open of a WAL database otherwise leaves `-wal`/`-shm` files behind, owned by whoever ran the doctor (often root), which
the service's own user could then not open. A missing data directory is reported, not created. Platforms are asked for
an access token or the bot's identity, never sent a message. Whatever goes wrong inside a check becomes that check's
failure with the error's own text; the doctor itself does not raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.text import Text

from .connectors.base import Connector
from .errors import AssistantError, ConfigError, DeliveryFailed
from .settings import EngineSettings, Settings

RUNBOOK = "docs/runbooks/doctor.md"
# Its sections, one per kind of check (tests/service/test_doctor.py keeps them and the page's headings equal).
SECTIONS = frozenset(
    {
        "config",
        "state-store",
        "queue",
        "engine",
        "engine-probe",
        "knowledge-store",
        "connectors",
        "tls",
        "clock-skew",
        "disk-space",
    }
)

# Thresholds shared with the alerts, so the doctor and the pager agree on what is wrong (monitoring/rulegen.py).
QUEUE_AGE_WARN_SECONDS = 300.0  # AIAssistantQueueOldestMessageAge
DISK_WARN_FREE_RATIO = 0.20  # NodeFilesystemFillingUp
DISK_FAIL_FREE_RATIO = 0.05  # NodeFilesystemAlmostFull
CERT_WARN_DAYS = 14.0  # TLSCertificateExpiring, warning
CERT_FAIL_DAYS = 3.0  # TLSCertificateExpiring, critical
# A Date header has one-second resolution and is stamped somewhere within the round trip: below this, clocks agree.
CLOCK_NOISE_SECONDS = 2.0
# The engine signs nothing; its clock is a second opinion on ours, held to the tightest common window (Slack, Standard
# Webhooks) when no connector names a tighter one.
DEFAULT_SIGNATURE_WINDOW = 300.0
PROBE_PROMPT = "Reply with the single word: ready"
PROBE_MAX_TOKENS = 16
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 (a status, not a password)
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # not applicable to this configuration, or impossible because something it needs failed


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str  # what was found, one line
    advice: str = ""  # what to do about a warning or failure
    anchor: str = ""  # section of the doctor runbook
    details: dict[str, Any] = field(default_factory=dict)  # numbers for scripts (latencies, counts, days)

    def __post_init__(self) -> None:
        if self.anchor and self.anchor not in SECTIONS:
            raise ValueError(f"no section {self.anchor!r} in {RUNBOOK}")

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.anchor}" if self.anchor else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "summary": self.summary,
            "advice": self.advice,
            "runbook": self.runbook,
            "details": self.details,
        }


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings are for a person to read, not a reason for a script to stop)."""
        return all(c.status is not Status.FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "checks": [c.as_dict() for c in self.checks]}


# --------------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Configured:
    settings: Settings
    connectors: dict[str, Connector]
    problems: list[str]  # plugins that did not load: the service starts without them


def validate(settings: Settings) -> Configured:
    """Everything `app.build_parts` refuses, without what it opens: no state store, no knowledge base, no engine
    connection. `check-config` and the doctor share it, so neither creates the data directory or the SQLite file."""
    from .channels.loader import load_channels
    from .connectors.loader import load_connectors
    from .pipeline.filters import SensitiveWordFilter
    from .plugins.loader import registry_with_plugins
    from .registry import Kind

    registry = registry_with_plugins(settings.config_dir, settings.data_dir)
    connectors = load_connectors(settings, registry)
    try:
        registry.get(Kind.ENGINE, settings.engine.name)
    except LookupError as exc:
        raise ConfigError("assistant.yaml", "engine.name", str(exc)) from None
    words = settings.resolve(settings.filters.words_file) if settings.filters.words_file else None
    SensitiveWordFilter.from_file(words, settings.filters.action)
    load_channels(settings.config_dir, registry, connectors)
    if settings.store.backend == "redis" and settings.store.redis_url is None:
        raise ConfigError("assistant.yaml", "store.redis_url", "required when store.backend is redis")
    if settings.knowledge.enabled:
        # Names only: building the knowledge base would load the embedding model and create its store.
        from .knowledge import embedders, stores
        from .knowledge.retrieval import _factory

        _factory("embedder", settings.knowledge.embedder.name, embedders.BUILTIN)
        _factory("store", settings.knowledge.store.name, stores.BUILTIN)
    return Configured(settings, connectors, list(registry.problems))


def _config_check(configured: Configured, prefix: str = "") -> Check:
    names = ", ".join(configured.connectors) or "none"
    summary = f"{prefix}{len(configured.connectors)} connector(s): {names}"
    if configured.problems:
        return Check(
            "config",
            Status.WARN,
            f"{summary}; plugin problems: {'; '.join(configured.problems)}",
            "the service starts without these plugins: fix or remove them (ai-assistant plugin list)",
            "config",
        )
    return Check("config", Status.PASS, summary)


def load_configuration(config_dir: Path, data_dir: Path) -> tuple[Check, Settings | None, Configured | None]:
    """The config check, plus whatever loaded: settings without connectors still allow the engine and store checks."""
    from .localsecrets import load_local_secrets
    from .settings import load_settings

    advice = "fix the file and key named; `ai-assistant check-config` repeats this check alone"
    try:
        load_local_secrets(data_dir)
        settings = load_settings(config_dir, data_dir)
    except (AssistantError, OSError, UnicodeDecodeError) as exc:
        return Check("config", Status.FAIL, _one_line(exc), advice, "config"), None, None
    try:
        configured = validate(settings)
    except (AssistantError, OSError, UnicodeDecodeError) as exc:
        return Check("config", Status.FAIL, _one_line(exc), advice, "config"), settings, None
    return _config_check(configured), settings, configured


# --------------------------------------------------------------------------------------------------- clock samples
class Clocks:
    """Date headers of every answer the checks receive, as (our clock - theirs) in seconds, per source."""

    def __init__(self) -> None:
        self.skew: dict[str, float] = {}
        self.answered: set[str] = set()

    def hook(self, source: str) -> Callable[[httpx.Response], Awaitable[None]]:
        async def on_response(response: httpx.Response) -> None:
            received = time.time()
            self.answered.add(source)
            date = response.headers.get("date")
            if date is None:
                return
            with contextlib.suppress(TypeError, ValueError, IndexError):
                self.skew[source] = received - parsedate_to_datetime(date).timestamp()

        return on_response

    def client(self, source: str, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT, event_hooks={"response": [self.hook(source)]}, **kwargs)


def _clock_check(source: str, skew: float, window: float | None, what: str) -> Check:
    name = f"clock vs {source}"
    direction = "ahead of" if skew > 0 else "behind"
    details = {"skew_seconds": round(skew, 1), "window_seconds": window}
    if abs(skew) <= CLOCK_NOISE_SECONDS:
        return Check(name, Status.PASS, f"in step with {what}'s Date header", details=details)
    summary = f"this host's clock is {abs(skew):.0f} s {direction} {what}'s"
    if window is None:
        return Check(name, Status.PASS, f"{summary} ({what} signs nothing with a timestamp)", details=details)
    if abs(skew) > window:
        return Check(
            name,
            Status.WARN,
            f"{summary}: past the {window:.0f} s signature window, so signed requests are refused as stale",
            "synchronise the clock (timedatectl; chrony or systemd-timesyncd must be active)",
            "clock-skew",
            details,
        )
    return Check(name, Status.PASS, f"{summary}, within the {window:.0f} s signature window", details=details)


def signature_window(connector: Connector) -> float | None:
    """How far a platform's signed timestamp may be from our clock before `verify` refuses it."""
    window = getattr(connector.config, "replay_window_seconds", None)
    if isinstance(window, int | float):
        return float(window)
    if connector.platform == "slack":
        from .connectors.slack import WINDOW as SLACK_WINDOW

        return float(SLACK_WINDOW)
    if connector.platform == "dingtalk":
        from .connectors.dingtalk import WINDOW as DINGTALK_WINDOW

        return float(DINGTALK_WINDOW)
    if connector.platform == "generic_im":
        return 300.0  # Standard Webhooks' timestamp tolerance
    return None  # Telegram: a secret token, no timestamp


# --------------------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class QueueInfo:
    depth: int
    oldest_age_seconds: float
    dead: int


def _read_sqlite(path: Path, queries: Sequence[str]) -> tuple[float, list[tuple[Any, ...]]]:
    wal = path.with_name(path.name + "-wal")
    mode = "ro" if wal.exists() else "ro&immutable=1"
    started = time.perf_counter()
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=5)
    try:
        rows = [tuple(db.execute(q).fetchone()) for q in queries]
    finally:
        db.close()
    return time.perf_counter() - started, rows


async def _state_store(settings: Settings | None, data_dir: Path) -> tuple[Check, QueueInfo | None]:
    name = "state store"
    if settings is not None and settings.store.backend == "redis" and settings.store.redis_url is not None:
        return await _redis_store(settings.store.redis_url.get_secret_value())
    path = data_dir / "state.sqlite3"
    if not path.exists():
        return (
            Check(
                name,
                Status.WARN,
                f"no state file at {path} yet",
                "normal before the first start (the service creates it); otherwise check --data-dir",
                "state-store",
            ),
            None,
        )
    now = time.time()
    try:
        latency, rows = await asyncio.to_thread(
            _read_sqlite,
            path,
            [
                "SELECT COUNT(*), MIN(enqueued_at) FROM jobs WHERE state = 'queued'",
                "SELECT COUNT(*) FROM jobs WHERE state = 'dead'",
            ],
        )
    except sqlite3.Error as exc:
        return (
            Check(name, Status.FAIL, f"SQLite at {path}: {exc}", "see the runbook section", "state-store"),
            None,
        )
    (depth, oldest), (dead,) = rows
    queue = QueueInfo(int(depth), max(0.0, now - float(oldest)) if oldest else 0.0, int(dead))
    ms = latency * 1000
    check = Check(name, Status.PASS, f"SQLite at {path} read in {ms:.0f} ms", details={"latency_ms": round(ms, 1)})
    return check, queue


async def _redis_store(url: str) -> tuple[Check, QueueInfo | None]:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from .store.redis import ENQUEUED, QUEUE, P

    where = urlsplit(url)
    label = f"Redis at {where.hostname}:{where.port or 6379}"  # never the URL: it may carry the password
    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        started = time.perf_counter()
        await cast(Awaitable[Any], client.ping())
        latency = time.perf_counter() - started
        depth = int(await client.zcard(QUEUE))
        oldest: list[Any] = await client.zrange(ENQUEUED, 0, 0, withscores=True)
        dead = 0
        async for _ in client.scan_iter(match=P + "dead:*", count=1000):
            dead += 1
            if dead >= 100_000:  # bounded: the count only has to say "there are many"
                break
    except (RedisError, OSError) as exc:
        check = Check("state store", Status.FAIL, f"{label}: {_one_line(exc)}", "see the runbook", "state-store")
        return check, None
    finally:
        await client.aclose()
    age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
    ms = latency * 1000
    check = Check("state store", Status.PASS, f"{label} answers in {ms:.0f} ms", details={"latency_ms": round(ms, 1)})
    return check, QueueInfo(depth, age, dead)


def _queue_check(queue: QueueInfo | None) -> Check:
    if queue is None:
        return Check("queue", Status.SKIP, "not read: the state store check did not pass")
    details = {"depth": queue.depth, "oldest_age_seconds": round(queue.oldest_age_seconds, 1), "dead": queue.dead}
    summary = (
        f"{queue.depth} waiting, oldest {queue.oldest_age_seconds:.0f} s, {queue.dead} dead letter(s)"
        if queue.depth
        else f"empty, {queue.dead} dead letter(s)"
    )
    if queue.oldest_age_seconds > QUEUE_AGE_WARN_SECONDS:
        advice = "answers are not being produced: check the engine and the workers"
        return Check("queue", Status.WARN, summary, advice, "queue", details)
    if queue.dead:
        advice = "messages that gave up: find their last error in the log before they are forgotten"
        return Check("queue", Status.WARN, summary, advice, "queue", details)
    return Check("queue", Status.PASS, summary, details=details)


# --------------------------------------------------------------------------------------------------- engine
async def _engine(engine: EngineSettings, clocks: Clocks) -> Check:
    name = "engine"
    if engine.name != "hf_inference":
        return Check(name, Status.SKIP, f"engine {engine.name} is a plugin: the doctor speaks only the OpenAI API")
    url = engine.base_url.rstrip("/")
    probe = url + "/models" if url.endswith("/v1") else url + "/health"
    headers = {"Authorization": f"Bearer {engine.api_key.get_secret_value()}"} if engine.api_key else {}
    what = f"{engine.name} at {engine.base_url}"
    async with clocks.client("engine") as client:
        started = time.perf_counter()
        try:
            resp = await client.get(probe, headers=headers)
        except httpx.HTTPError as exc:
            advice = "start the model server (or `ai-assistant up`), or fix engine.base_url"
            return Check(name, Status.FAIL, f"{what} is unreachable: {_one_line(exc)}", advice, "engine")
    ms = (time.perf_counter() - started) * 1000
    if resp.status_code >= 400:
        advice = "401/403: engine.api_key is wrong; other codes: the engine's own log"
        summary = f"{what} answered HTTP {resp.status_code}: {_one_line(resp.text[:200])}"
        return Check(name, Status.FAIL, summary, advice, "engine")
    return Check(name, Status.PASS, f"{what} answers in {ms:.0f} ms", details={"latency_ms": round(ms, 1)})


async def _engine_probe(engine: EngineSettings) -> Check:
    """A short generation through the same client the service uses: time to first token and tokens per second."""
    from huggingface_hub import AsyncInferenceClient

    name = "engine probe"
    client = AsyncInferenceClient(
        base_url=engine.base_url,
        api_key=engine.api_key.get_secret_value() if engine.api_key else None,
        timeout=engine.timeout_seconds,
    )
    started = time.perf_counter()
    first: float | None = None
    pieces = 0  # OpenAI-compatible servers stream one token per chunk
    try:
        stream = await client.chat_completion(
            messages=[{"role": "user", "content": PROBE_PROMPT}],
            model=engine.model,
            max_tokens=PROBE_MAX_TOKENS,
            temperature=0.0,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
                first = first or time.perf_counter()
    except Exception as exc:  # the client raises its own hierarchy plus aiohttp's; any of them fails the probe
        advice = "the engine answers but cannot generate: its log says why (model not loaded, out of memory)"
        return Check(name, Status.FAIL, f"generation failed: {_one_line(exc)}", advice, "engine-probe")
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    ended = time.perf_counter()
    if first is None:
        advice = "check engine.model names a model the server has"
        return Check(name, Status.FAIL, "the engine answered with no tokens", advice, "engine-probe")
    ttft = first - started
    rate = (pieces - 1) / (ended - first) if pieces > 1 and ended > first else 0.0
    details = {"ttft_ms": round(ttft * 1000, 1), "tokens": pieces, "tokens_per_second": round(rate, 1)}
    summary = f"first token after {ttft * 1000:.0f} ms, {rate:.1f} tokens/s ({pieces} tokens)"
    return Check(name, Status.PASS, summary, details=details)


# --------------------------------------------------------------------------------------------------- knowledge
async def _knowledge(settings: Settings, clocks: Clocks) -> Check:
    name = "knowledge store"
    kb = settings.knowledge
    if not kb.enabled:
        return Check(name, Status.SKIP, "knowledge.enabled is false")
    if kb.store.name == "embedded":
        path = settings.data_dir / "knowledge" / "knowledge.sqlite3"
        if not path.exists():
            advice = "add documents with `ai-assistant kb ingest PATH` (until then answers are not grounded)"
            return Check(name, Status.WARN, f"empty: no knowledge store at {path} yet", advice, "knowledge-store")
        try:
            latency, rows = await asyncio.to_thread(
                _read_sqlite, path, ["SELECT COUNT(*) FROM documents", "SELECT COUNT(*) FROM chunks"]
            )
        except sqlite3.Error as exc:
            advice = "restore it from a backup or re-ingest (`ai-assistant kb`)"
            return Check(name, Status.FAIL, f"{path}: {exc}", advice, "knowledge-store")
        (documents,), (chunks,) = rows
        ms = latency * 1000
        summary = f"embedded at {path}: {documents} document(s), {chunks} chunk(s), read in {ms:.0f} ms"
        return Check(name, Status.PASS, summary, details={"latency_ms": round(ms, 1), "chunks": chunks})
    if kb.store.name == "weaviate" and kb.store.url:
        headers = {"Authorization": f"Bearer {kb.store.api_key.get_secret_value()}"} if kb.store.api_key else {}
        async with clocks.client("knowledge") as client:
            started = time.perf_counter()
            try:
                resp = await client.get(kb.store.url.rstrip("/") + "/v1/.well-known/ready", headers=headers)
            except httpx.HTTPError as exc:
                summary = f"Weaviate at {kb.store.url} is unreachable: {_one_line(exc)}"
                return Check(name, Status.FAIL, summary, "see docs/runbooks/knowledge.md", "knowledge-store")
        ms = (time.perf_counter() - started) * 1000
        if resp.status_code >= 300:
            summary = f"Weaviate at {kb.store.url} is not ready (HTTP {resp.status_code})"
            return Check(name, Status.FAIL, summary, "see docs/runbooks/knowledge.md", "knowledge-store")
        summary = f"Weaviate at {kb.store.url} ready in {ms:.0f} ms"
        return Check(name, Status.PASS, summary, details={"latency_ms": round(ms, 1)})
    return Check(name, Status.SKIP, f"store {kb.store.name} is a plugin: not checked")


# --------------------------------------------------------------------------------------------------- connectors
def _probe_copy(connector: Connector) -> Connector:
    """A twin of the connector that tries each call once: the doctor reports the platform's first answer, and a
    running service's connector keeps its cached token and rate limits untouched."""
    config = connector.config
    if "max_attempts" in type(config).model_fields:
        config = config.model_copy(update={"max_attempts": 1})
    return type(connector)(connector.name, config)


async def _token(connector: Any) -> str:
    _, lifetime = await connector._fetch_token()
    return f"credentials accepted: access token issued for {float(lifetime) / 3600:.1f} h"


async def _slack(connector: Any) -> str:
    from .connectors.slack import _check

    body = await connector.api.call(
        "POST",
        f"{connector.api_base}/auth.test",
        endpoint="auth.test",
        headers={"Authorization": f"Bearer {connector.config.bot_token.get_secret_value()}"},
        check=_check,
        limited=False,
    )
    return f"credentials accepted: auth.test knows the bot as {body.get('user')} in {body.get('team')}"


async def _telegram(connector: Any) -> str:
    from .connectors.telegram import _check

    body = await connector.api.call(
        "POST", f"{connector._bot_url}/getMe", endpoint="getMe", check=_check, limited=False
    )
    return f"credentials accepted: getMe knows the bot as @{body.get('result', {}).get('username')}"


async def _generic_im(connector: Any) -> str:
    resp = await connector.http.get(connector.config.reply_url)
    if resp.status_code in (502, 503, 504):  # a proxy in front of a receiver that is down; 501 etc. still answer
        raise DeliveryFailed(f"{connector.name}: reply_url answered HTTP {resp.status_code}")
    # Replies are signed here and verified by the receiver: there is no credential the receiver can confirm unasked.
    return f"reply_url answers (HTTP {resp.status_code}); no credential to test (replies are signed here)"


_PROBES: dict[str, Callable[[Any], Awaitable[str]]] = {
    "feishu": _token,
    "lark": _token,
    "dingtalk": _token,
    "wecom": _token,
    "slack": _slack,
    "telegram": _telegram,
    "generic_im": _generic_im,
}


async def _connector(connector: Connector, clocks: Clocks) -> Check:
    name = f"connector {connector.name}"
    probe_fn = _PROBES.get(connector.platform)
    if probe_fn is None:
        return Check(name, Status.SKIP, f"platform {connector.platform} has no credential probe")
    source = f"connector {connector.name}"
    probe = _probe_copy(connector)
    probe._http = clocks.client(source)  # the connector's own calls, with our Date-header hook on its client
    started = time.perf_counter()
    try:
        summary = await probe_fn(probe)
    except Exception as exc:  # DeliveryFailed carries the platform's own answer; anything else is reported as is
        text = _one_line(exc)
        if source in clocks.answered:
            advice = "the platform refused the credentials: compare them in connectors.yaml with its console"
            return Check(name, Status.FAIL, f"{connector.platform} refused: {text}", advice, "connectors")
        advice = "check the network path (ACL, proxy, DNS) to the platform, and api_base if set"
        return Check(name, Status.FAIL, f"{connector.platform} unreachable: {text}", advice, "connectors")
    finally:
        await probe.aclose()
    ms = (time.perf_counter() - started) * 1000
    return Check(name, Status.PASS, f"{connector.platform}: {summary} ({ms:.0f} ms)", details={"latency_ms": round(ms)})


# --------------------------------------------------------------------------------------------------- TLS
_DEFAULT_BASES = {"telegram": "https://api.telegram.org"}


def _tls_targets(settings: Settings, connectors: Iterable[Connector]) -> dict[tuple[str, int], str]:
    urls: list[tuple[str, str | None]] = [("engine", settings.engine.base_url)]
    for c in connectors:
        url = getattr(c, "api_base", None) or c.config.api_base or _DEFAULT_BASES.get(c.platform)
        urls.append((f"connector {c.name}", url or getattr(c.config, "reply_url", None)))
    if settings.knowledge.enabled:
        urls += [("knowledge", settings.knowledge.store.url), ("embedder", settings.knowledge.embedder.url)]
    targets: dict[tuple[str, int], str] = {}
    for label, url in urls:
        parts = urlsplit(url or "")
        if parts.scheme == "https" and parts.hostname:
            targets.setdefault((parts.hostname, parts.port or 443), label)
    return targets


def _expiry_check(name: str, what: str, not_before: float, not_after: float) -> Check:
    now = time.time()
    days = (not_after - now) / 86400
    until = datetime.fromtimestamp(not_after, tz=UTC).strftime("%Y-%m-%d")
    details = {"days_left": round(days, 1), "not_after": until}
    renew = "renew it (roles/tls renews Let's Encrypt certificates; check its timer)"
    if not_before > now:
        return Check(name, Status.FAIL, f"{what} is not valid before {not_before:.0f}", renew, "tls", details)
    if days < 0:
        return Check(name, Status.FAIL, f"{what} expired {-days:.0f} day(s) ago ({until})", renew, "tls", details)
    if days < CERT_FAIL_DAYS:
        return Check(name, Status.FAIL, f"{what} expires in {days:.1f} day(s) ({until})", renew, "tls", details)
    if days < CERT_WARN_DAYS:
        return Check(name, Status.WARN, f"{what} expires in {days:.0f} day(s) ({until})", renew, "tls", details)
    return Check(name, Status.PASS, f"{what} valid for {days:.0f} more day(s) ({until})", details=details)


async def tls_endpoint_check(host: str, port: int, label: str) -> Check:
    name = f"tls {host}:{port}"
    context = ssl.create_default_context()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), HTTP_TIMEOUT.read
        )
    except ssl.SSLCertVerificationError as exc:
        advice = "the certificate is not trusted here (expired, wrong name, unknown CA)"
        return Check(name, Status.FAIL, f"{label}: {exc.verify_message or exc}", advice, "tls")
    except (OSError, TimeoutError) as exc:
        return Check(name, Status.FAIL, f"{label}: cannot connect ({_one_line(exc)})", "network path", "tls")
    cert = writer.get_extra_info("peercert") or {}
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 5)
    not_before = ssl.cert_time_to_seconds(cert["notBefore"]) if "notBefore" in cert else 0.0
    return _expiry_check(name, f"{label}'s certificate", not_before, ssl.cert_time_to_seconds(cert["notAfter"]))


def tls_file_check(path: Path) -> Check:
    """A PEM certificate on disk (e.g. the one nginx serves); the first certificate of a chain is the server's."""
    from cryptography import x509

    name = f"tls {path}"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Check(name, Status.FAIL, f"cannot read a PEM certificate: {_one_line(exc)}", "check the path", "tls")
    return _expiry_check(
        name, "certificate", cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    )


# --------------------------------------------------------------------------------------------------- disk
def _disk(name: str, path: Path) -> Check:
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # a data dir not created yet lives on its parent's filesystem
    usage = shutil.disk_usage(existing)
    ratio = usage.free / usage.total if usage.total else 0.0
    free_gib = usage.free / 2**30
    details = {"free_bytes": usage.free, "free_ratio": round(ratio, 3)}
    summary = f"{free_gib:.1f} GiB free ({ratio:.0%}) under {path}"
    advice = "free space: old logs, backups, unused models (see docs/runbooks/host.md)"
    if ratio < DISK_FAIL_FREE_RATIO:
        return Check(name, Status.FAIL, summary, advice, "disk-space", details)
    if ratio < DISK_WARN_FREE_RATIO:
        return Check(name, Status.WARN, summary, advice, "disk-space", details)
    return Check(name, Status.PASS, summary, details=details)


def _model_dir(settings: Settings) -> Path | None:
    if settings.local_model.model_path is not None:
        return settings.local_model.model_path.parent
    from .engines.local_server import default_model_path

    try:
        return default_model_path().parent
    except ConfigError:
        return None


# --------------------------------------------------------------------------------------------------- running it
async def _guard(name: str, check: Awaitable[Check]) -> Check:
    try:
        return await check
    except Exception as exc:  # a check that breaks is a failed check, never a traceback
        return Check(name, Status.FAIL, f"check failed: {_one_line(exc)}", "see the runbook", "")


async def run_checks(
    config: Check,
    settings: Settings | None,
    connectors: dict[str, Connector] | None,
    *,
    data_dir: Path,
    tls_files: Sequence[Path] = (),
) -> Report:
    clocks = Clocks()
    data_dir = settings.data_dir if settings is not None else data_dir
    not_loaded = "not checked: the configuration did not load"

    async def store_and_queue() -> tuple[Check, Check]:
        try:
            store, queue = await _state_store(settings, data_dir)
        except Exception as exc:
            store, queue = Check("state store", Status.FAIL, _one_line(exc), "see the runbook", "state-store"), None
        return store, _queue_check(queue)

    async def engine_and_probe() -> tuple[Check, Check]:
        if settings is None:
            return Check("engine", Status.SKIP, not_loaded), Check("engine probe", Status.SKIP, not_loaded)
        reach = await _guard("engine", _engine(settings.engine, clocks))
        if reach.status is not Status.PASS:
            return reach, Check("engine probe", Status.SKIP, "not run: the engine check did not pass")
        return reach, await _guard("engine probe", _engine_probe(settings.engine))

    async def skipped(name: str, why: str) -> Check:
        return Check(name, Status.SKIP, why)

    knowledge = (
        _guard("knowledge store", _knowledge(settings, clocks)) if settings else skipped("knowledge store", not_loaded)
    )
    if connectors is not None:
        connector_checks = [_guard(f"connector {n}", _connector(c, clocks)) for n, c in connectors.items()]
    else:
        connector_checks = [skipped("connectors", not_loaded)]
    tls = [
        _guard(f"tls {host}:{port}", tls_endpoint_check(host, port, label))
        for (host, port), label in (
            _tls_targets(settings, (connectors or {}).values()).items() if settings is not None else []
        )
    ]
    pairs, rest = await asyncio.gather(
        asyncio.gather(store_and_queue(), engine_and_probe()), asyncio.gather(knowledge, *connector_checks, *tls)
    )
    (store, queue), (engine, probe) = pairs
    checks: list[Check] = [config, store, queue, engine, probe, *rest]
    checks += [tls_file_check(p) for p in tls_files]
    if not tls and not tls_files:
        checks.append(Check("tls", Status.SKIP, "no https URL configured and no --tls-cert given"))
    checks += _clock_checks(clocks, connectors or {})
    checks.append(_disk("disk (state)", data_dir))
    model_dir = _model_dir(settings) if settings is not None else None
    if model_dir is not None:
        checks.append(_disk("disk (models)", model_dir))
    return Report(checks)


def _clock_checks(clocks: Clocks, connectors: dict[str, Connector]) -> list[Check]:
    windows = {f"connector {n}": signature_window(c) for n, c in connectors.items()}
    known = [w for w in windows.values() if w is not None]
    tightest = min([DEFAULT_SIGNATURE_WINDOW, *known])
    out: list[Check] = []
    for source, skew in clocks.skew.items():
        window = windows.get(source, tightest)
        what = source.removeprefix("connector ")
        out.append(_clock_check(source.removeprefix("connector "), skew, window, what))
    if not out:
        out.append(Check("clock", Status.SKIP, "no answer carried a Date header to compare with"))
    return out


async def diagnose(config_dir: Path, data_dir: Path, tls_files: Sequence[Path] = ()) -> Report:
    """`ai-assistant doctor`: load the configuration from disk, then check everything it names."""
    config, settings, configured = load_configuration(config_dir, data_dir)
    connectors = configured.connectors if configured is not None else None
    try:
        return await run_checks(config, settings, connectors, data_dir=data_dir, tls_files=tls_files)
    finally:
        for connector in (connectors or {}).values():
            await connector.aclose()


async def diagnose_running(settings: Settings, connectors: dict[str, Connector], problems: list[str]) -> Report:
    """`/readyz?verbose`: the same checks against the configuration the service started with."""
    config = _config_check(Configured(settings, connectors, problems), prefix="loaded at start: ")
    return await run_checks(config, settings, connectors, data_dir=settings.data_dir)


# --------------------------------------------------------------------------------------------------- output
_LOOK = {
    Status.PASS: ("PASS", "green"),
    Status.WARN: ("WARN", "yellow"),
    Status.FAIL: ("FAIL", "bold red"),
    Status.SKIP: ("SKIP", "dim"),
}


def render(report: Report, console: Console) -> None:
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        label, style = _LOOK[check.status]
        console.print(Text.assemble((label, style), "  ", (check.name.ljust(width), "bold"), "  ", check.summary))
        if check.status in (Status.WARN, Status.FAIL) and (check.advice or check.runbook):
            hint = check.advice + (f" (see {check.runbook})" if check.runbook else "")
            console.print(Text(" " * (6 + width) + "→ " + hint, style="dim"))
    counts = report.counts()
    console.print(
        Text(
            f"{counts['pass']} passed, {counts['warn']} warning(s), {counts['fail']} failed, {counts['skip']} skipped",
            style="green" if report.ok else "bold red",
        )
    )


def _one_line(exc: BaseException | str) -> str:
    """An error as one line, with the cause it wraps: httpx's "All connection attempts failed" hides the socket's own
    "Connection refused" one level down."""
    if not isinstance(exc, BaseException):
        return " ".join(exc.split())
    text = str(exc) or type(exc).__name__
    root: BaseException = exc
    for _ in range(5):
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    if root is not exc and str(root) and str(root) not in text:
        text = f"{text} ({root})"
    return " ".join(text.split())
