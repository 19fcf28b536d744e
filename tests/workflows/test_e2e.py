"""Workflows end to end: the real `ai-assistant serve` process, the real SmolLM2 model server, real SQLite, signed
requests on the generic webhook path. Stand-ins only for what cannot run here: the IM platform's receiving side
(ReplyReceiver) and a business system (BusinessSystem, a real HTTP server on 127.0.0.1 that counts its calls)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import (
    ReplyReceiver,
    ServiceProcess,
    message,
    metric_value,
    signed_generic_request,
    venv_bin,
    wait_until,
    write_config,
)
from tests.workflows.standin import BusinessSystem

PATH = "/api/im/callback"
ADMIN = "workflow-admin-token-8c3e1a5f"
pytestmark = pytest.mark.model


def orders_flow(erp: BusinessSystem, *, hold: bool = False) -> dict[str, Any]:
    """order <number>: look the order up in the ERP, let the model phrase a line about it, reply with the data.
    With `hold`, a second call to the ERP blocks after the lookup (the crash test kills the service there)."""
    tail = "hold" if hold else "summary"
    nodes: list[dict[str, Any]] = [
        {"id": "start", "kind": "trigger", "keywords": ["order"]},
        {"id": "number", "kind": "set", "values": {"order": "{{ message.text.split()[-1] }}"}},
        {
            "id": "erp",
            "kind": "http",
            "url": erp.base + "/orders/{{ vars.order }}",
            "headers": {"Authorization": "Bearer {{ secrets.ERP_TOKEN }}"},
            "map": {"status": "{{ response.json.status }}", "eta": "{{ response.json.eta }}"},
        },
        {"id": "answer", "kind": "reply", "text": "Order {{ vars.order }}: {{ vars.status }}, ETA {{ vars.eta }}."},
        {"id": "down", "kind": "reply", "text": "The order system is not answering."},
    ]
    if hold:
        nodes.append({"id": "hold", "kind": "http", "method": "POST", "url": erp.base + "/hold", "json": {"o": "x"}})
    else:
        nodes.append({
            "id": "summary", "kind": "llm", "save_as": "line",
            "prompt": "In one short sentence, tell a customer their order is {{ vars.status }}.",
        })  # fmt: skip
    return {
        "id": "orders",
        "version": 3,
        "settings": {"http": {"allow_hosts": ["127.0.0.1"], "allow_private": True, "timeout_seconds": 60}},
        "nodes": nodes,
        "edges": [
            {"from": "start", "to": "number"},
            {"from": "number", "to": "erp"},
            {"from": "erp", "to": tail},
            {"from": "erp", "to": "down", "when": "error"},
            {"from": tail, "to": "answer"},
        ],
    }


DESK = {
    "id": "desk",
    "version": 1,
    "nodes": [
        {"id": "start", "kind": "trigger", "keywords": ["desk"]},
        {
            "id": "intent",
            "kind": "branch",
            "cases": [
                {"label": "human", "keywords": ["refund", "complaint"]},
                {"label": "howto", "regex": r"how (do|can) i"},
            ],
        },
        {
            "id": "support",
            "kind": "handoff",
            "chat_id": "support-chat",
            "text": "{{ message.user_id }}: {{ message.text }}",
        },
        {"id": "told", "kind": "reply", "text": "I have passed this to the support team."},
        {"id": "handbook", "kind": "reply", "text": "See the handbook, chapter 2."},
        {"id": "other", "kind": "reply", "text": "The desk can help with refunds and how-tos."},
    ],
    "edges": [
        {"from": "start", "to": "intent"},
        {"from": "intent", "to": "support", "when": "human"},
        {"from": "intent", "to": "handbook", "when": "howto"},
        {"from": "intent", "to": "other", "when": "default"},
        {"from": "support", "to": "told"},
    ],
}


def configure(tmp_path: Path, receiver: ReplyReceiver, engine: str, *flows: dict[str, Any], **worker: Any) -> Path:
    assistant: dict[str, Any] = {"admin": {"token": ADMIN}}
    if worker:
        assistant["worker"] = worker
    config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=engine, assistant=assistant)
    (config / "workflows").mkdir()
    for index, flow in enumerate(flows):
        (config / "workflows" / f"{index:02d}-{flow['id']}.yaml").write_text(yaml.safe_dump(flow, sort_keys=False))
    return config


ENV = {"ERP_TOKEN": "erp-token-for-the-e2e-test"}


class Service(ServiceProcess):
    """ServiceProcess with a start-up wait for a machine shared by many test runs (its imports alone can take 30 s
    under load there)."""

    def start(self) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            venv_bin("ai-assistant"),
            "serve",
            "--config-dir",
            str(self.config_dir),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        wait_until(self._healthy, 180, f"service on {self.base} (log: {self.log})")
        return self


@pytest.fixture
def erp() -> Iterator[BusinessSystem]:
    system = BusinessSystem()
    yield system
    system.close()


@pytest.fixture
def service(
    tmp_path: Path, receiver: ReplyReceiver, model_server: str, erp: BusinessSystem
) -> Iterator[ServiceProcess]:
    config = configure(tmp_path, receiver, model_server, orders_flow(erp), DESK)
    svc = Service(config, tmp_path / "data", env=ENV).start()
    yield svc
    svc.stop()


def send(svc: ServiceProcess, event_id: str, text: str) -> None:
    body, headers = signed_generic_request(message(event_id, text))
    assert svc.post(PATH, body, headers).status_code == 200


def test_keyword_flow_calls_the_business_system_and_replies_with_its_data(
    service: ServiceProcess, receiver: ReplyReceiver, erp: BusinessSystem
) -> None:
    send(service, "evt-order", "where is my order 4711")
    reply = wait_until(lambda: receiver.for_event("evt-order"), 90, "the workflow's answer")[0]
    assert reply["text"] == "Order 4711: shipped, ETA 2026-12-24."
    assert erp.calls["/orders/4711"] == 1
    sent = dict(erp.headers)["/orders/4711"]
    assert sent["authorization"] == "Bearer " + ENV["ERP_TOKEN"] and len(sent["idempotency-key"]) == 32
    assert ENV["ERP_TOKEN"] not in service.log.read_text(), "the secret stays out of the logs"
    # The trace, through the admin API and the CLI: every node with its inputs and outputs, the model's line too.
    auth = {"authorization": f"Bearer {ADMIN}"}
    listed = httpx.get(service.base + "/admin/api/workflows", headers=auth, timeout=10).json()
    assert [(w["id"], w["version"]) for w in listed["workflows"]] == [("orders", 3), ("desk", 1)]
    trace = httpx.get(service.base + "/admin/api/workflows/traces/evt-order", headers=auth, timeout=10).json()
    assert [s["node"] for s in trace["steps"]] == ["start", "number", "erp", "summary", "answer"]
    assert trace["steps"][2]["inputs"]["url"].endswith("/orders/4711") and ENV["ERP_TOKEN"] not in json.dumps(trace)
    assert trace["steps"][3]["outputs"]["text"].strip(), "the real model wrote the summary line"
    assert httpx.get(service.base + "/admin/api/workflows/traces/nope", headers=auth, timeout=10).status_code == 404
    assert httpx.get(service.base + "/admin/api/workflows", timeout=10).status_code == 401
    cli = subprocess.run(
        [venv_bin("ai-assistant"), "workflow", "trace", "evt-order", "--json",
         "--config-dir", str(service.config_dir), "--data-dir", str(service.data_dir)],
        capture_output=True, text=True, timeout=60, env=service.env, check=True,
    )  # fmt: skip
    assert [json.loads(line)["node"] for line in cli.stdout.splitlines()][-1] == "answer"


def test_intent_branch_hands_off_to_another_chat_and_other_messages_keep_the_default_answer(
    service: ServiceProcess, receiver: ReplyReceiver
) -> None:
    send(service, "evt-refund", "desk: I want a refund for my chair")
    send(service, "evt-howto", "desk: how do I book a room?")
    send(service, "evt-other", "desk: hello")
    send(service, "evt-plain", "Name three colours.")
    for event in ("evt-refund", "evt-howto", "evt-other", "evt-plain"):
        wait_until(lambda e=event: receiver.for_event(e), 90, f"the answer to {event}")
    assert receiver.for_event("evt-refund")[0]["text"] == "I have passed this to the support team."
    assert receiver.for_event("evt-howto")[0]["text"] == "See the handbook, chapter 2."
    assert receiver.for_event("evt-other")[0]["text"] == "The desk can help with refunds and how-tos."
    handed = [r for r in receiver.received if r["chat_id"] == "support-chat"]
    assert [r["text"] for r in handed] == ["u-1: desk: I want a refund for my chair"]
    plain = receiver.for_event("evt-plain")[0]
    assert plain["chat_id"] == "chat-1" and plain["text"].strip(), "no trigger matched: the model answered"
    auth = {"authorization": f"Bearer {ADMIN}"}
    assert (
        httpx.get(service.base + "/admin/api/workflows/traces/evt-plain", headers=auth, timeout=10).status_code == 404
    )
    wait_until(
        lambda: metric_value(service.metrics(), "ai_assistant_answers_total", {"outcome": "answered"}) == 4,
        10,
        "four answers counted",
    )


def _steps(data: Path) -> list[str]:
    db = data / "state.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [json.loads(r)["node"] for (r,) in conn.execute("SELECT record FROM workflow_steps ORDER BY step")]


def test_kill_9_mid_workflow_resumes_after_the_http_node_without_calling_it_again(
    tmp_path: Path, receiver: ReplyReceiver, model_server: str, erp: BusinessSystem
) -> None:
    config = configure(tmp_path, receiver, model_server, orders_flow(erp, hold=True), lease_seconds=2)
    data = tmp_path / "data"
    first = Service(config, data, env=ENV).start()
    try:
        send(first, "evt-crash", "order 77")
        wait_until(lambda: erp.calls["/hold"] >= 1, 60, "the run to reach the node after the lookup")
        assert _steps(data) == ["start", "number", "erp"], "the lookup's result is checkpointed"
    finally:
        first.kill9()
    assert receiver.received == [] and erp.calls["/orders/77"] == 1
    erp.release.set()  # the business system answers from now on
    second = Service(config, data, env=ENV).start()
    try:
        reply = wait_until(lambda: receiver.for_event("evt-crash"), 90, "the answer after the restart")[0]
        assert reply["text"] == "Order 77: shipped, ETA 2026-12-24."
        time.sleep(3)  # longer than a lease: a second delivery would show up now
        assert len(receiver.for_event("evt-crash")) == 1
        assert erp.calls["/orders/77"] == 1, "the checkpointed HTTP call was not repeated"
        keys = erp.keys("/hold")
        assert len(keys) == 2 and keys[0] == keys[1], "the cut-off call was repeated with the same Idempotency-Key"
        assert _steps(data) == ["start", "number", "erp", "hold", "answer"]
    finally:
        second.stop()
