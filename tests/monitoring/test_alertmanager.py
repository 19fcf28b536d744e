"""Alertmanager: the example config is valid, every alert the rules can raise is routed where it must go, and the
inhibit rules really mute (checked on a real Alertmanager on loopback)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import free_port, wait_until

from .conftest import ALERTMANAGER_YML, tool
from .test_rules import alerts


def write_ca(path: Path) -> None:
    """A CA certificate where the config's tls_config.ca_file points (Alertmanager loads it at start)."""
    import trustme

    path.write_bytes(trustme.CA().cert_pem.bytes())


def routes(amtool: str, config: Path, labels: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items())],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().split(",")


def test_amtool_check_config(amtool: str) -> None:
    proc = subprocess.run([amtool, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            {"alertname": "AIAssistantEngineErrors", "severity": "critical", "service": "model-server"},
            "team-im-and-fallback",
        ),
        ({"alertname": "NodeMemoryLow", "severity": "warning", "service": "node"}, "team-im"),
        ({"alertname": "AIAssistantDown", "severity": "critical", "service": "ai-assistant"}, "fallback"),
        (
            {"alertname": "AlertmanagerNotificationsFailing", "severity": "critical", "integration": "webhook"},
            "fallback",
        ),
        ({"alertname": "SomethingNew", "severity": "info"}, "team-im"),
        ({"alertname": "Watchdog", "severity": "none", "service": "monitoring"}, "watchdog"),
    ],
)
def test_routing_with_verify_receivers(amtool: str, labels: dict[str, str], receiver: str) -> None:
    cmd = [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", f"--verify.receivers={receiver}"]
    proc = subprocess.run([*cmd, *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_verify_receivers_fails_on_a_wrong_expectation(amtool: str) -> None:
    cmd = [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", "--verify.receivers=team-im"]
    proc = subprocess.run([*cmd, "alertname=AIAssistantDown", "severity=critical"], capture_output=True, text=True)
    assert proc.returncode == 1


def test_every_critical_alert_also_goes_by_email_and_every_warning_to_the_im(amtool: str) -> None:
    email = {r["name"] for r in yaml.safe_load(ALERTMANAGER_YML.read_text())["receivers"] if r.get("email_configs")}
    for rule in alerts():
        labels = {"alertname": rule["alert"], **{k: str(v) for k, v in rule["labels"].items()}}
        got = routes(amtool, ALERTMANAGER_YML, labels)
        if rule["alert"] == "Watchdog":
            assert got == ["watchdog"], f"the heartbeat is routed to {got}: it must reach the dead man's switch only"
        elif rule["labels"]["severity"] == "critical":
            assert set(got) & email, f"{rule['alert']} (critical) is routed to {got}, none sends e-mail"
        else:
            assert got == ["team-im"], f"{rule['alert']} (warning) is routed to {got}"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The example config on a real Alertmanager, loopback only, gossip off, credentials files in tmp."""
    config = ALERTMANAGER_YML.read_text().replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "alertmanager.yml").write_text(config)
    (tmp_path / "alertmanager-smtp.password").write_text("unused\n")
    (tmp_path / "alertmanager-assistant.token").write_text("unused\n")
    write_ca(tmp_path / "alertmanager-assistant-ca.crt")
    port = free_port()
    proc = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 20, "alertmanager /-/ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _alert(labels: dict[str, str]) -> dict[str, Any]:
    now = datetime.now(tz=UTC)
    return {"labels": labels, "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=10)).isoformat()}


def test_inhibition_on_a_real_alertmanager(alertmanager: str) -> None:
    kb = {"alertname": "TLSCertificateExpiring", "service": "node", "job": "tls", "instance": "https://kb.corp.example"}
    bot = {**kb, "instance": "https://bot.corp.example"}
    engine = {"alertname": "AIAssistantEngineErrors", "severity": "critical", "service": "model-server", "engine": "hf"}
    sent = [
        {**kb, "severity": "critical"},
        {**kb, "severity": "warning"},  # muted by its critical twin
        {**bot, "severity": "warning"},  # another instance: not muted
        {"alertname": "ModelServerDown", "severity": "critical", "service": "model-server", "instance": "gpu:8080"},
        engine,  # follows from the model server being down: muted
        {"alertname": "AIAssistantDown", "severity": "critical", "service": "ai-assistant", "instance": "app-a:9464"},
        # The IM webhook goes through the assistant: its failure is the same outage, muted (one outage, one page)...
        {"alertname": "AlertmanagerNotificationsFailing", "severity": "critical", "service": "monitoring",
         "integration": "webhook"},
        # ...but a failing e-mail path is news of its own.
        {"alertname": "AlertmanagerNotificationsFailing", "severity": "critical", "service": "monitoring",
         "integration": "email"},
    ]  # fmt: skip
    assert httpx.post(alertmanager + "/api/v2/alerts", json=[_alert(a) for a in sent], timeout=5).status_code == 200

    def states() -> dict[tuple[str, str, str], str] | None:
        got = httpx.get(alertmanager + "/api/v2/alerts", timeout=5).json()
        if len(got) < len(sent):
            return None
        out = {}
        for a in got:
            key = (
                a["labels"]["alertname"],
                a["labels"]["severity"],
                a["labels"].get("instance", a["labels"].get("integration", "")),
            )
            out[key] = a["status"]["state"]
        return out if "unprocessed" not in out.values() else None

    got = wait_until(states, 10, "alertmanager to process the alerts")
    assert got == {
        ("TLSCertificateExpiring", "critical", "https://kb.corp.example"): "active",
        ("TLSCertificateExpiring", "warning", "https://kb.corp.example"): "suppressed",
        ("TLSCertificateExpiring", "warning", "https://bot.corp.example"): "active",
        ("ModelServerDown", "critical", "gpu:8080"): "active",
        ("AIAssistantEngineErrors", "critical", ""): "suppressed",
        ("AIAssistantDown", "critical", "app-a:9464"): "active",
        ("AlertmanagerNotificationsFailing", "critical", "webhook"): "suppressed",
        ("AlertmanagerNotificationsFailing", "critical", "email"): "active",
    }
