"""Item 6 of issue 16: dead letters are operable. A message whose answer the platform keeps refusing gives up after
worker.max_attempts; its user gets one message saying so; the operator lists, inspects and replays it with the real
`ai-assistant dlq` command and the admin API, and the replay delivers the answer exactly once."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin
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

PATH = "/api/im/callback"
ADMIN = "dlq-admin-token-4f1d9c2b7a"
NOTICE = "Sorry, the answer to your message could not be delivered. Please ask again later."


def _dlq(config: Path, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [venv_bin("ai-assistant"), "dlq", "--config-dir", str(config), "--data-dir", str(data), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_a_dead_letter_tells_the_user_once_and_can_be_replayed(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start()
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={"worker": {"max_attempts": 2, "retry_backoff_seconds": 0.2}, "admin": {"token": ADMIN}},
    )
    data = tmp_path / "data"
    receiver.refuse = lambda reply: reply["text"] == ANSWER  # the answer never gets through; other texts do
    svc = ServiceProcess(config, data).start()
    try:
        body, headers = signed_generic_request(message("evt-dead"))
        assert svc.post(PATH, body, headers).status_code == 200
        wait_until(lambda: receiver.for_event("evt-dead"), 60, "the failure notice")
        time.sleep(1.0)
        assert [r["text"] for r in receiver.for_event("evt-dead")] == [NOTICE], "one notice, nothing else"
        assert receiver.for_event("evt-dead")[0]["webhook_id"] == "evt-dead:failed"
        metrics = svc.metrics()
        assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "dead"}) == 1
        wait_until(lambda: metric_value(svc.metrics(), "ai_assistant_dead_letters") == 1, 30, "the dead-letter gauge")

        listed = _dlq(config, data, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert entry["event_id"] == "evt-dead" and entry["attempts"] == 2 and "503" in entry["last_error"]
        shown = _dlq(config, data, "show", entry["id"])
        assert shown.returncode == 0 and json.loads(shown.stdout)["answer"] == ANSWER, shown.stdout
        missing = _dlq(config, data, "show", "no-such-id")
        assert missing.returncode == 1 and missing.stderr.strip() == "error: no dead letter with id no-such-id"

        admin = {"authorization": f"Bearer {ADMIN}"}
        api = httpx.get(svc.base + "/admin/dlq", headers=admin, timeout=5).json()
        assert api["count"] == 1 and api["dead_letters"][0]["id"] == entry["id"]
        assert httpx.get(svc.base + "/admin/dlq", timeout=5).status_code == 401
        gone = httpx.delete(svc.base + "/admin/dlq/no-such-id", headers=admin, timeout=5)
        assert gone.status_code == 404 and gone.json()["field"] == "id"

        receiver.refuse = None  # the platform is back
        replayed = _dlq(config, data, "replay", entry["id"])
        assert replayed.returncode == 0, replayed.stderr
        wait_until(lambda: len(receiver.for_event("evt-dead")) == 2, 60, "the replayed answer")
        time.sleep(1.0)
        assert [r["text"] for r in receiver.for_event("evt-dead")] == [NOTICE, ANSWER]
        assert len(engine.requests()) == 1, "the replay sent the checkpointed answer"
        assert httpx.get(svc.base + "/admin/dlq", headers=admin, timeout=5).json()["count"] == 0
        assert _dlq(config, data, "drop", entry["id"]).returncode == 1, "no longer a dead letter"
    finally:
        svc.stop()
        engine.kill()


def test_dead_letters_are_dropped_through_the_admin_api(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start()
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={"worker": {"max_attempts": 1, "retry_backoff_seconds": 0.2}, "admin": {"token": ADMIN}},
    )
    receiver.status = 503  # nothing gets through, not even the notice: the message still ends as a dead letter
    svc = ServiceProcess(config, tmp_path / "data").start()
    admin = {"authorization": f"Bearer {ADMIN}"}
    try:
        body, headers = signed_generic_request(message("evt-drop"))
        assert svc.post(PATH, body, headers).status_code == 200
        listed = wait_until(
            lambda: httpx.get(svc.base + "/admin/dlq", headers=admin, timeout=5).json()["dead_letters"],
            60,
            "the dead letter",
        )
        job_id = listed[0]["id"]
        shown = httpx.get(f"{svc.base}/admin/dlq/{job_id}", headers=admin, timeout=5).json()
        assert shown["text"] == "Name three colours." and shown["parts_sent"] == 0
        assert httpx.delete(f"{svc.base}/admin/dlq/{job_id}", headers=admin, timeout=5).json()["dropped"] is True
        assert httpx.get(svc.base + "/admin/dlq", headers=admin, timeout=5).json()["count"] == 0
        assert httpx.post(f"{svc.base}/admin/dlq/{job_id}/replay", headers=admin, timeout=5).status_code == 404
        assert receiver.for_event("evt-drop") == []
    finally:
        svc.stop()
        engine.kill()
