"""POST /api/alerts on its own FastAPI app with a real in-test notifier: authentication, validation of Alertmanager's
webhook JSON, the text posted into the chat, idempotency, and the refusals of unusable settings."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ai_assistant.alerting import alert_router
from ai_assistant.errors import ConfigError, DeliveryFailed
from ai_assistant.settings import AlertsSettings

TOKEN = "am-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUNBOOK = "https://git.internal.example/ai-assistant/blob/main/docs/runbooks/model-server.md#aiassistantengineerrors"


class RecordingNotifier:
    """Does what the real notifier promises: one post per idempotency key; can be told to fail like a platform."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, str, str]] = []
        self.calls = 0
        self.fail = False
        self._seen: set[str] = set()

    async def __call__(self, connector: str, chat_id: str, text: str, key: str) -> None:
        self.calls += 1
        if self.fail:
            raise DeliveryFailed("platform answered 503")
        if key in self._seen:
            return
        self._seen.add(key)
        self.posts.append((connector, chat_id, text, key))


def settings(**kw: Any) -> AlertsSettings:
    values: dict[str, Any] = {"token": SecretStr(TOKEN), "connector": "ops-feishu", "chat_id": "oc_ops"} | kw
    return AlertsSettings(**values)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def client(notifier: RecordingNotifier) -> TestClient:
    app = FastAPI()
    app.include_router(alert_router(settings(), notifier, connectors={"ops-feishu", "im-connector"}))
    return TestClient(app)


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    labels = {"alertname": "AIAssistantEngineErrors", "severity": "critical", "service": "model-server"} | labels
    return {
        "status": status,
        "labels": labels,
        "annotations": {
            "summary": f"Engine {labels.get('engine', 'hf_inference')}: 25% of inference calls fail",
            "description": "More than 5 % of calls failed.",
            "runbook_url": RUNBOOK,
        },
        "startsAt": "2026-11-25T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=...",
        "fingerprint": f"fp-{labels.get('engine', 'hf_inference')}",
    }


def webhook(*alerts: dict[str, Any], status: str = "firing", truncated: int = 0) -> dict[str, Any]:
    alerts = alerts or (alert(),)
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    return {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="AIAssistantEngineErrors", service="model-server"}',
        "truncatedAlerts": truncated,
        "status": status,
        "receiver": "team-im-and-fallback",
        "groupLabels": {"alertname": "AIAssistantEngineErrors", "service": "model-server"},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


def test_a_firing_group_is_posted_as_one_short_text(client: TestClient, notifier: RecordingNotifier) -> None:
    r = client.post("/api/alerts", json=webhook(), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "posted"
    [(connector, chat, text, key)] = notifier.posts
    assert (connector, chat) == ("ops-feishu", "oc_ops")
    assert text.splitlines() == [
        "[FIRING] critical: AIAssistantEngineErrors (model-server)",
        "- Engine hf_inference: 25% of inference calls fail",
        f"Runbook: {RUNBOOK}",
    ]
    assert key.startswith("alert:")


def test_resolved_says_so_without_runbook(client: TestClient, notifier: RecordingNotifier) -> None:
    r = client.post("/api/alerts", json=webhook(alert("resolved"), status="resolved"), headers=AUTH)
    assert r.status_code == 200
    text = notifier.posts[0][2]
    assert text.startswith("[RESOLVED] critical: AIAssistantEngineErrors")
    assert "Runbook" not in text


def test_alertmanager_repeats_post_once_and_a_change_in_the_group_posts_again(
    client: TestClient, notifier: RecordingNotifier
) -> None:
    first = webhook()
    for _ in range(3):  # Alertmanager's retry and repeat_interval send the same group again
        assert client.post("/api/alerts", json=first, headers=AUTH).status_code == 200
    assert len(notifier.posts) == 1 and notifier.calls == 3
    grown = webhook(alert(), alert(engine="tgi-b"))
    assert client.post("/api/alerts", json=grown, headers=AUTH).status_code == 200
    resolved = webhook(alert("resolved"), alert("resolved", engine="tgi-b"), status="resolved")
    assert client.post("/api/alerts", json=resolved, headers=AUTH).status_code == 200
    assert len(notifier.posts) == 3
    assert len({p[3] for p in notifier.posts}) == 3
    assert notifier.posts[1][2].splitlines()[0].endswith("— 2 firing, 0 resolved")


def test_a_big_group_is_cut_to_a_few_lines(client: TestClient, notifier: RecordingNotifier) -> None:
    many = [alert(engine=f"e{i}") for i in range(8)]
    assert client.post("/api/alerts", json=webhook(*many, truncated=12), headers=AUTH).status_code == 200
    lines = notifier.posts[0][2].splitlines()
    assert lines[-2] == "- … and 15 more"
    assert len(lines) == 1 + 5 + 1 + 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
def test_without_the_right_bearer_token_401_and_nothing_posted(
    client: TestClient, notifier: RecordingNotifier, headers: dict[str, str]
) -> None:
    r = client.post("/api/alerts", json=webhook(), headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "missing or wrong bearer token"}
    assert notifier.calls == 0


def _without(path: list[str | int]) -> dict[str, Any]:
    body = copy.deepcopy(webhook())
    target: Any = body
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return body


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(webhook())
    target: Any = body
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (json.dumps([1, 2]).encode(), "body: Input should be a valid dictionary"),
        (json.dumps(_with(["version"], "3")).encode(), "version: Input should be '4'"),
        (json.dumps(_without(["groupKey"])).encode(), "groupKey: Field required"),
        (json.dumps(_with(["alerts"], [])).encode(), "alerts: List should have at least 1 item"),
        (json.dumps(_with(["status"], "pending")).encode(), "status: Input should be 'firing' or 'resolved'"),
        (json.dumps(_with(["alerts", 0, "labels", "severity"], 3)).encode(), "alerts.0.labels.severity: Input should"),
        (json.dumps(_with(["alerts", 0, "startsAt"], "yesterday")).encode(), "alerts.0.startsAt: Input should"),
        (json.dumps(_with(["truncatedAlerts"], -1)).encode(), "truncatedAlerts: Input should be greater"),
    ],
)
def test_bad_payloads_get_400_naming_the_field(
    client: TestClient, notifier: RecordingNotifier, body: bytes, message: str
) -> None:
    r = client.post("/api/alerts", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"].startswith(message), r.json()
    assert notifier.calls == 0


def test_too_large_is_413(client: TestClient, notifier: RecordingNotifier) -> None:
    big = webhook(alert(engine="x" * 300_000))
    r = client.post("/api/alerts", json=big, headers=AUTH)
    assert r.status_code == 413
    assert "error" in r.json()
    assert notifier.calls == 0


def test_a_sender_that_hangs_up_mid_body_is_refused_and_nothing_is_posted(notifier: RecordingNotifier) -> None:
    app = FastAPI()
    app.include_router(alert_router(settings(), notifier, connectors={"ops-feishu"}))
    body = json.dumps(webhook()).encode()
    messages = [
        {"type": "http.request", "body": body[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"authorization", AUTH["Authorization"].encode()), (b"content-type", b"application/json")]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/alerts", "raw_path": b"/api/alerts", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert "disconnected" in json.loads(sent[1]["body"])["error"]
    assert notifier.calls == 0


def test_platform_failure_is_502_so_alertmanager_retries(client: TestClient, notifier: RecordingNotifier) -> None:
    notifier.fail = True
    r = client.post("/api/alerts", json=webhook(), headers=AUTH)
    assert r.status_code == 502
    assert r.json() == {"error": "posting to connector 'ops-feishu' failed; Alertmanager will retry"}
    notifier.fail = False
    assert client.post("/api/alerts", json=webhook(), headers=AUTH).status_code == 200
    assert len(notifier.posts) == 1


def test_the_token_never_reaches_the_log(
    client: TestClient, notifier: RecordingNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/api/alerts", json=webhook(), headers=AUTH)
    client.post("/api/alerts", json=webhook(), headers={"Authorization": "Bearer guess"})
    notifier.fail = True
    client.post("/api/alerts", json=webhook(alert(engine="b")), headers=AUTH)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"token": None}, "assistant.yaml: alerts.token: required"),
        ({"token": SecretStr("changeme")}, "assistant.yaml: alerts.token: must be a real secret"),
        ({"token": SecretStr("short")}, "assistant.yaml: alerts.token: must be a real secret"),
        ({"connector": None}, "assistant.yaml: alerts.connector: required"),
        ({"chat_id": ""}, "assistant.yaml: alerts.chat_id: required"),
        ({"connector": "nope"}, "assistant.yaml: alerts.connector: no connector named 'nope'"),
    ],
)
def test_unusable_settings_are_refused_with_one_line(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        alert_router(settings(**kw), RecordingNotifier(), connectors={"ops-feishu"})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_firing_group_marks_its_already_resolved_members(client: TestClient, notifier: RecordingNotifier) -> None:
    body = webhook(alert(engine="a"), alert("resolved", engine="b"))
    assert client.post("/api/alerts", json=body, headers=AUTH).status_code == 200
    lines = notifier.posts[0][2].splitlines()
    assert lines[0].endswith("— 1 firing, 1 resolved")
    assert lines[1] == "- Engine a: 25% of inference calls fail"
    assert lines[2] == "- (resolved) Engine b: 25% of inference calls fail"
