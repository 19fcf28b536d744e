"""The whole alert path on loopback, every part real: `ai-assistant serve` exports metrics on its metrics port, a real
Prometheus scrapes it with this repository's rules, steady failing traffic makes alerts fire, a real Alertmanager with
the example routing posts them to the assistant's POST /api/alerts, and the assistant posts them through its
generic-IM connector into the IM stand-in (tests.helpers.ReplyReceiver, which verifies the connector's signature).
Forged webhooks raise a warning (IM only); genuine messages meeting a dead model server raise a critical alert, which
also goes by e-mail, to a real SMTP server on loopback (aiosmtpd), and to the fallback webhook. With the assistant
stopped, its AIAssistantDown page reaches the fallback webhook and e-mail, which do not go through it. The Watchdog
reaches the dead man's switch only. The fallback webhook and the dead man's switch are stand-ins (WebhookSink: a
pager or a heartbeat service cannot exist here), listening on loopback.

Two things differ from production, so that the test takes seconds instead of minutes: the copies of the rules have
`for:` removed (promtool's unit tests cover the hold times), and the copy of alertmanager.yml waits 1 s instead of
30 s before a group's first notification. Scrape and evaluation run every second, and Prometheus resends a firing
alert after 1 s instead of 1 min. Everything started is stopped.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.helpers import (
    ReplyReceiver,
    ServiceProcess,
    free_port,
    message,
    signed_generic_request,
    wait_until,
    write_config,
)

from .conftest import ALERTMANAGER_YML, RULES, tool

TOKEN = "e2e-alert-token-0123456789abcdef"
WEBHOOK = "/api/im/callback"


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    """Prometheus + Alertmanager processes; stopped in reverse order by `stop`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, binary: str, *args: str) -> None:
        log = (self.work / f"{binary}.log").open("wb")
        self.procs.append(subprocess.Popen([tool(binary), *args], stdout=log, stderr=subprocess.STDOUT))

    def log(self, binary: str) -> str:
        path = self.work / f"{binary}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Mailbox:
    """aiosmtpd handler: keeps (subject, body) of every message Alertmanager sends."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        mail = message_from_bytes(envelope.original_content or envelope.content)
        parts = [p.get_payload(decode=True) for p in mail.walk() if p.get_content_maintype() == "text"]
        body = "".join(p.decode(errors="replace") for p in parts if isinstance(p, bytes))
        self.messages.append((str(mail["Subject"]), body))
        return "250 OK"


class WebhookSink:
    """A loopback HTTP endpoint that keeps every Alertmanager webhook payload it receives (stand-in for a pager or a
    dead man's switch service)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alertnames(self, status: str = "firing") -> list[str]:
        return [a["labels"]["alertname"] for p in self.payloads for a in p["alerts"] if a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pager() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture
def deadman() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def service(tmp_path: Path, receiver: ReplyReceiver) -> Iterator[tuple[ServiceProcess, int]]:
    metrics_port = free_port()
    dead_engine = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: no answer is needed here
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=dead_engine,
        assistant={
            "server": {"metrics_port": metrics_port},
            "alerts": {"token": TOKEN, "connector": "im-connector", "chat_id": "ops-chat"},
            "knowledge": {"enabled": False},
        },
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{metrics_port}/metrics"), 20, "the metrics port")
        yield svc, metrics_port
    finally:
        svc.stop()


def _rules_without_hold_times(dest: Path) -> None:
    dest.mkdir()
    for src in RULES.glob("*.rules.yml"):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("for", None)
        (dest / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def stack(
    tmp_path: Path,
    service: tuple[ServiceProcess, int],
    mailbox: tuple[Mailbox, int],
    pager: WebhookSink,
    deadman: WebhookSink,
) -> Iterator[dict[str, str]]:
    svc, metrics_port = service
    work = tmp_path / "stack"
    work.mkdir()
    prom_port, am_port = free_port(), free_port()

    # Alertmanager: the example config, pointed at this service, its token and a group_wait of 1 s.
    am = yaml.safe_load(ALERTMANAGER_YML.read_text())
    # E-mail to the loopback SMTP server, which offers neither STARTTLS nor AUTH.
    am["global"].update(smtp_smarthost=f"127.0.0.1:{mailbox[1]}", smtp_require_tls=False)
    del am["global"]["smtp_auth_username"], am["global"]["smtp_auth_password_file"]
    (work / "token").write_text(TOKEN + "\n")
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            if "authorization" in hook.get("http_config", {}):  # the assistant's (plain HTTP on loopback here)
                hook["url"] = f"{svc.base}/api/alerts"
                hook["http_config"]["authorization"]["credentials_file"] = str(work / "token")
                hook["http_config"].pop("tls_config", None)
            else:
                hook["url"] = deadman.url if receiver["name"] == "watchdog" else pager.url
    am["route"]["group_wait"] = "1s"
    for route in am["route"]["routes"]:
        route["group_wait"] = "1s"
    (work / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))

    _rules_without_hold_times(work / "rules")
    prometheus_yml = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules" / "*.rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "ai-assistant", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(prometheus_yml))

    stack = Stack(work)
    try:
        stack.start(
            "prometheus-alertmanager",
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        )
        stack.start(
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            # An alert that fired before Prometheus found Alertmanager is sent again only after this delay (1 min in
            # production); the Watchdog fires at the first evaluation, so that would be a minute of waiting here.
            "--rules.alert.resend-delay=1s",
        )
        am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
        wait_until(lambda: _ready(am_url + "/-/ready"), 20, f"alertmanager\n{stack.log('prometheus-alertmanager')}")
        wait_until(lambda: _ready(prom_url + "/-/ready"), 20, f"prometheus\n{stack.log('prometheus')}")
        yield {"prometheus": prom_url, "alertmanager": am_url}
    finally:
        stack.stop()


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=5)
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def _firing(prom: str) -> set[str]:
    alerts = httpx.get(prom + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def _alert_posts(receiver: ReplyReceiver, alertname: str) -> list[dict[str, Any]]:
    return [r for r in receiver.received if r["chat_id"] == "ops-chat" and alertname in r["text"]]


def test_failing_traffic_fires_alerts_that_reach_the_team_chat_and_email(
    service: tuple[ServiceProcess, int],
    stack: dict[str, str],
    receiver: ReplyReceiver,
    mailbox: tuple[Mailbox, int],
    pager: WebhookSink,
    deadman: WebhookSink,
) -> None:
    svc, _ = service
    box, _ = mailbox
    prom = stack["prometheus"]
    wait_until(lambda: _query(prom, 'up{job="ai-assistant"} == 1'), 30, "Prometheus to scrape the assistant")

    stop = threading.Event()
    sent = {"forged": 0, "genuine": 0}

    def traffic() -> None:
        # Steady traffic over many scrapes (a burst between two scrapes would not move rate()): about 20 forged
        # requests a second, with a wrong secret, and one genuine message a second, which the workers cannot answer
        # because nothing listens at the engine's address.
        forger = "whsec_" + "Zm9yZ2VkLXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzIQ=="
        deadline = time.monotonic() + 120
        i = 0
        with httpx.Client(base_url=svc.base, timeout=5) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                body, headers = signed_generic_request(message(f"forged-{i}"), secret=forger)
                client.post(WEBHOOK, content=body, headers=headers)
                sent["forged"] += 1
                if i % 20 == 0:
                    body, headers = signed_generic_request(message(f"genuine-{i}"))
                    client.post(WEBHOOK, content=body, headers=headers)
                    sent["genuine"] += 1
                i += 1
                stop.wait(0.05)

    def arrived() -> bool:
        return bool(
            _alert_posts(receiver, "AIAssistantSignatureFailures")
            and _alert_posts(receiver, "AIAssistantEngineErrors")
            and any("AIAssistantEngineErrors" in subject for subject, _ in box.messages)
        )

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        wait_until(
            arrived,
            120,
            "both alerts in the team chat and the critical one by e-mail"
            " (Prometheus -> Alertmanager -> /api/alerts -> generic-IM connector; Alertmanager -> SMTP)",
            interval=0.5,
        )
    except AssertionError:
        chat = [r["text"].splitlines()[0] for r in receiver.received if r["chat_id"] == "ops-chat"]
        raise AssertionError(
            f"chat got {chat}, mail got {[m[0] for m in box.messages]}, firing {_firing(prom)}"
        ) from None
    finally:
        stop.set()
        worker.join(10)

    warning = _alert_posts(receiver, "AIAssistantSignatureFailures")[0]["text"]
    print(f"\n[posted into the team chat]\n{warning}")
    assert warning.startswith("[FIRING] warning: AIAssistantSignatureFailures (ai-assistant)"), warning
    assert re.search(r"Connector im-connector: \d+(\.\d+)? webhooks with a bad signature in 10 minutes", warning)
    assert "Runbook: https://" in warning and "/assistant.md#aiassistantsignaturefailures" in warning, warning

    critical = _alert_posts(receiver, "AIAssistantEngineErrors")[0]["text"]
    print(f"\n[posted into the team chat]\n{critical}")
    assert critical.startswith("[FIRING] critical: AIAssistantEngineErrors (model-server)"), critical
    assert re.search(r"Engine hf_inference: \d+(\.\d+)?% of inference calls fail", critical), critical
    subject, body = next(m for m in box.messages if "AIAssistantEngineErrors" in m[0])
    print(f"\n[e-mail] {subject}")
    assert "model-server.md#aiassistantengineerrors" in body
    assert not any("AIAssistantSignatureFailures" in subject for subject, _ in box.messages), "a warning went by e-mail"
    # The critical alert reached the fallback webhook too (team-im-and-fallback); the warning did not.
    wait_until(
        lambda: "AIAssistantEngineErrors" in pager.alertnames(), 30, "the critical alert at the fallback webhook"
    )
    assert "AIAssistantSignatureFailures" not in pager.alertnames()
    # The heartbeat reached the dead man's switch and nobody else.
    assert "Watchdog" in deadman.alertnames()
    assert not any("Watchdog" in r["text"] for r in receiver.received), "the Watchdog was posted into the team chat"
    assert "Watchdog" not in pager.alertnames()
    assert receiver.rejected == 0, "the stand-in received a post with a bad connector signature"

    firing = _firing(prom)
    assert {"AIAssistantSignatureFailures", "AIAssistantEngineErrors"} <= firing, firing
    # Forged requests are rejections, not failures of ours: the availability SLO must not burn on them.
    assert "AIAssistantAvailabilityBudgetBurn" not in firing, firing
    assert sent["forged"] > 20 and sent["genuine"] > 0

    time.sleep(2)  # Alertmanager's retries or a second evaluation would show up as a second post by now
    assert len(_alert_posts(receiver, "AIAssistantSignatureFailures")) == 1
    assert len(_alert_posts(receiver, "AIAssistantEngineErrors")) == 1


def test_with_the_assistant_stopped_its_page_reaches_the_fallback_webhook_and_email(
    service: tuple[ServiceProcess, int],
    stack: dict[str, str],
    receiver: ReplyReceiver,
    mailbox: tuple[Mailbox, int],
    pager: WebhookSink,
    deadman: WebhookSink,
) -> None:
    """The IM path goes through the assistant: when it is down, the page must take the other way (issue 17)."""
    svc, _ = service
    box, _ = mailbox
    prom = stack["prometheus"]
    wait_until(lambda: _query(prom, 'up{job="ai-assistant"} == 1'), 30, "Prometheus to scrape the assistant")
    # The dead man's switch hears from a healthy pipeline before anything breaks.
    try:
        wait_until(lambda: "Watchdog" in deadman.alertnames(), 30, "the Watchdog at the dead man's switch")
    except AssertionError:
        am = httpx.get(stack["alertmanager"] + "/api/v2/alerts", timeout=5).json()
        raise AssertionError(f"firing {_firing(prom)}; alertmanager has {am}; sink got {deadman.payloads}") from None
    svc.stop()

    def paged() -> bool:
        return "AIAssistantDown" in pager.alertnames() and any("AIAssistantDown" in m[0] for m in box.messages)

    try:
        wait_until(paged, 60, "AIAssistantDown at the fallback webhook and by e-mail", interval=0.5)
    except AssertionError:
        raise AssertionError(
            f"pager got {pager.alertnames()}, mail got {[m[0] for m in box.messages]}, firing {_firing(prom)}"
        ) from None
    page = next(a for p in pager.payloads for a in p["alerts"] if a["labels"]["alertname"] == "AIAssistantDown")
    print(f"\n[fallback webhook] {page['labels']['alertname']}: {page['annotations']['summary']}")
    assert page["labels"]["severity"] == "critical" and page["annotations"]["runbook_url"].endswith("#aiassistantdown")
    assert pager.payloads[0]["receiver"] == "fallback"
    # Nothing went (or could go) into the chat for it, and the heartbeat still goes only to the dead man's switch.
    assert not any("AIAssistantDown" in r["text"] for r in receiver.received)
    assert "Watchdog" not in pager.alertnames()
