"""The deploy gate's probe (`platform: probe`, `ai-assistant probe`) against real `ai-assistant serve` processes on
loopback with the session's real redis-server, as roles/assistant/tasks/slot_gate.yml runs it against the incoming
colour: a healthy instance passes; one that verifies with another secret, answers from another store, or takes
messages without answering them is refused with one line naming the step. The reply receiver is the stand-in for the
IM platform, there only to show the probe's answer never reaches it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ai_assistant.connectors.probe import TWICE, ProbeConfig, ProbeConnector, record_key
from ai_assistant.messages import OutboundText
from ai_assistant.registry import Kind, default_registry
from tests.helpers import SECRET, ReplyReceiver, ServiceProcess, free_port, metric_value, venv_bin, write_config

PROBE_SECRET = "whsec_" + "cHJvYmUtc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMh"  # pragma: allowlist secret
OTHER_SECRET = "whsec_" + "b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZSE="  # pragma: allowlist secret
PROBE = {
    "platform": "probe",
    "app_secret": PROBE_SECRET,
    "webhook_url": "http://127.0.0.1/_deploy/probe",
    "allowed_cidrs": ["127.0.0.1/32", "::1/128"],
}


def _config(
    config_dir: Path, redis_url: str, receiver: ReplyReceiver, probe_secret: str = PROBE_SECRET, **assistant: Any
) -> Path:
    connectors = {
        "im-connector": {
            "platform": "generic_im",
            "app_secret": SECRET,
            "webhook_url": "https://assistant.example/api/im/callback",
            "reply_url": receiver.url,
        },
        "deploy_probe": {**PROBE, "app_secret": probe_secret},
    }
    # No model server: /help is answered before the engine, so the probe must pass without one.
    return write_config(
        config_dir,
        reply_url=receiver.url,
        engine_url=f"http://127.0.0.1:{free_port()}/v1",
        # The role's trusted_proxies: nginx on loopback, whose clients the service sees through X-Forwarded-For.
        assistant={
            "store": {"backend": "redis", "redis_url": redis_url},
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            **assistant,
        },
        connectors=connectors,
    )


def _probe(config_dir: Path, data_dir: Path, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_bin("ai-assistant"), "probe", "--config-dir", str(config_dir), "--data-dir", str(data_dir),
         "--url", url, "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _probe_platform_installed() -> None:
    # The connector is found through the package's entry points like every platform (ADR 0001): a venv installed
    # before it was added must be reinstalled (scripts/bootstrap does so when pyproject.toml changes).
    if "probe" not in default_registry().names(Kind.CONNECTOR):
        pytest.fail("platform probe is not among the installed entry points: reinstall the package (pip install -e .)")


@pytest.fixture
def flushed(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushall()  # db 1 too: the "other store" case's
    return redis_url


@pytest.fixture
def healthy(tmp_path: Path, flushed: str, receiver: ReplyReceiver) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(_config(tmp_path / "config", flushed, receiver), tmp_path / "data").start()
    yield svc
    svc.stop()


def test_a_healthy_instance_passes_and_no_platform_sees_the_probe(
    healthy: ServiceProcess, receiver: ReplyReceiver
) -> None:
    done = _probe(healthy.config_dir, healthy.data_dir, healthy.base)
    assert done.returncode == 0, done.stderr
    assert "probe OK" in done.stdout and "de-duplicated" in done.stdout, done.stdout
    metrics = healthy.metrics()
    assert metric_value(metrics, "ai_assistant_duplicates_total", {"connector": "deploy_probe"}) == 1
    assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "answered"}) == 1
    assert receiver.received == [], "the probe's answer reached the IM platform's receiver"


def test_the_probe_is_refused_through_a_proxy_even_with_the_secret(healthy: ServiceProcess) -> None:
    """nginx's clients reach the service with X-Forwarded-For from loopback (a trusted proxy in the role): the
    probe connector's loopback allowlist then sees the client, and refuses before the signature is checked."""
    import httpx

    resp = httpx.post(
        healthy.base + "/_deploy/probe",
        content=b"{}",
        headers={"x-forwarded-for": "203.0.113.7"},
        timeout=10,
    )
    assert resp.status_code == 403, resp.text


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # Verifies wrongly: the instance checks signatures with another secret than the installation's.
        ("other-secret", "delivery: "),
        # Queues wrongly: it acknowledges into another store than the one the host shares (Redis db 1, not 0).
        ("other-store", "answer: none recorded"),
        # Takes messages but never answers them: an acknowledge-only instance (worker.enabled: false).
        ("no-worker", "answer: none recorded"),
    ],
)
def test_a_broken_instance_fails_the_probe_with_one_line(
    tmp_path: Path, flushed: str, receiver: ReplyReceiver, case: str, expected: str
) -> None:
    served = _config(
        tmp_path / "served",
        flushed[: -len("/0")] + "/1" if case == "other-store" else flushed,
        receiver,
        probe_secret=OTHER_SECRET if case == "other-secret" else PROBE_SECRET,
        **({"worker": {"enabled": False}} if case == "no-worker" else {}),
    )
    gate = _config(tmp_path / "gate", flushed, receiver)
    svc = ServiceProcess(served, tmp_path / "data").start()
    try:
        done = _probe(gate, tmp_path / "data", svc.base, timeout=15)
    finally:
        svc.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    if case == "other-secret":
        assert "HTTP 401" in lines[0], lines[0]


def test_no_probe_connector_is_one_line_naming_the_file(tmp_path: Path, flushed: str, receiver: ReplyReceiver) -> None:
    config = _config(tmp_path / "config", flushed, receiver)
    text = (config / "connectors.yaml").read_text()
    (config / "connectors.yaml").write_text(text.replace("platform: probe", "platform: generic_im\n  reply_url: x"))
    done = _probe(config, tmp_path / "data", "http://127.0.0.1:9", timeout=5)
    assert done.returncode == 2
    assert "connectors.yaml" in done.stderr and "no connector with platform: probe" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.anyio
async def test_a_second_answer_to_the_same_event_is_marked(redis_url: str) -> None:
    """What the gate sees when a colour queued a redelivery as a new job: two answers under different idempotency
    keys leave the mark; the same send retried (same key) does not."""
    import redis.asyncio as aioredis

    from ai_assistant.messages import InboundMessage
    from ai_assistant.store.redis import RedisStore

    await aioredis.from_url(redis_url).flushdb()
    store = RedisStore(redis_url)
    try:
        connector = ProbeConnector("deploy_probe", ProbeConfig.model_validate(PROBE))
        connector.leases = store

        def part(key: str) -> OutboundText:
            return OutboundText("deploy_probe", "deploy-probe", "Ask me", 1, 1, idempotency_key=key)

        await connector.send(part("job-a:1"))
        await connector.send(part("job-a:1"))  # a retried send
        assert await store.cache_get("deploy_probe", f"{record_key('job-a:1', 1)}:{TWICE}") is None
        # Two jobs answering one event (what a redelivery queued again becomes): different idempotency keys.
        event = InboundMessage(connector="deploy_probe", event_id="evt-1", chat_id="c", user_id="u", text="/help")
        first = OutboundText("deploy_probe", "c", "Ask me", 1, 1, idempotency_key="job-1:1", in_reply_to=event)
        second = OutboundText("deploy_probe", "c", "Ask me", 1, 1, idempotency_key="job-2:1", in_reply_to=event)
        await connector.send(first)
        assert await store.cache_get("deploy_probe", f"{record_key('evt-1', 1)}:{TWICE}") is None
        await connector.send(second)
        assert await store.cache_get("deploy_probe", f"{record_key('evt-1', 1)}:{TWICE}") == "job-2:1"
    finally:
        await store.close()
