"""Item 3 of issue 16: an engine outage or an overloaded engine delays the answer; it does not replace it with the
apology. The real `ai-assistant serve` with the pinned huggingface_hub client, a stand-in model server process
(tests/faults/engine_standin.py) killed and restarted on the same port, and the reply receiver as the platform."""

from __future__ import annotations

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
    wait_until,
    write_config,
)

PATH = "/api/im/callback"


def _config(tmp_path: Path, receiver: ReplyReceiver, engine: EngineStandin, deadline: float = 120) -> Path:
    return write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "engine": {"max_retries": 1, "timeout_seconds": 5},
            "worker": {"answer_deadline_seconds": deadline, "retry_backoff_seconds": 0.3, "lease_seconds": 6},
        },
    )


def _settled_replies(receiver: ReplyReceiver, event_id: str) -> list[dict[str, object]]:
    wait_until(lambda: receiver.for_event(event_id), 60, f"the answer to {event_id}")
    time.sleep(1.0)  # a second copy, if any, would arrive now
    return receiver.for_event(event_id)


def test_engine_killed_mid_answer_and_restarted_gives_the_models_answer(
    tmp_path: Path, receiver: ReplyReceiver
) -> None:
    engine = EngineStandin(tmp_path).start("--stall", "60")  # sends one token, then "thinks" until killed
    svc = ServiceProcess(_config(tmp_path, receiver, engine), tmp_path / "data").start()
    try:
        body, headers = signed_generic_request(message("evt-outage"))
        assert svc.post(PATH, body, headers).status_code == 200
        wait_until(engine.requests, 30, "the first request to reach the model")
        engine.kill()  # mid-stream: the client sees the connection cut after the first token
        wait_until(
            lambda: metric_value(svc.metrics(), "ai_assistant_engine_waits_total") >= 2,
            30,
            "the message to be put back twice while the engine is down",
        )
        assert receiver.for_event("evt-outage") == [], "no apology while the deadline has not passed"
        engine.start()  # same port, normal answers
        replies = _settled_replies(receiver, "evt-outage")
        assert [r["text"] for r in replies] == [ANSWER], "exactly one reply, and it is the model's"
        metrics = svc.metrics()
        assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "answered"}) == 1
        assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "engine_error"}) == 0
        # Each call is two attempts (max_retries=1) and there were at least two waits: the first call is the stalled
        # attempt and its refused retry, the second two refused ones; then the answering attempt.
        attempts = metric_value(metrics, "ai_assistant_engine_attempts_total")
        assert attempts >= 2 + 2 + 1, attempts
        assert len(engine.requests()) == 2, "requests that reached the server: the stalled one and the answered one"
    finally:
        svc.stop()
        engine.kill()


def test_503_then_429_with_retry_after_is_retried_and_answered(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start("--fail", "3", "--status", "503")
    svc = ServiceProcess(_config(tmp_path, receiver, engine), tmp_path / "data").start()
    try:
        body, headers = signed_generic_request(message("evt-503"))
        assert svc.post(PATH, body, headers).status_code == 200
        assert [r["text"] for r in _settled_replies(receiver, "evt-503")] == [ANSWER]
        assert [r["status"] for r in engine.requests()] == [503, 503, 503, 200]
        assert metric_value(svc.metrics(), "ai_assistant_engine_attempts_total") == 4
        engine.kill()
        # A server asking for 3 s: the next attempt waits at least that long.
        engine.start("--fail", "5", "--status", "429", "--retry-after", "3")
        body, headers = signed_generic_request(message("evt-429"))
        assert svc.post(PATH, body, headers).status_code == 200
        assert [r["text"] for r in _settled_replies(receiver, "evt-429")] == [ANSWER]
        calls = engine.requests()[4:]
        assert [r["status"] for r in calls] == [429, 200]
        assert calls[1]["at"] - calls[0]["at"] >= 2.9, "Retry-After honoured"
    finally:
        svc.stop()
        engine.kill()


def test_after_the_deadline_the_user_gets_one_apology_and_memory_stays_clean(
    tmp_path: Path, receiver: ReplyReceiver
) -> None:
    engine = EngineStandin(tmp_path)  # never started: nothing listens on its port
    svc = ServiceProcess(_config(tmp_path, receiver, engine, deadline=4), tmp_path / "data").start()
    try:
        body, headers = signed_generic_request(message("evt-late"))
        assert svc.post(PATH, body, headers).status_code == 200
        replies = _settled_replies(receiver, "evt-late")
        assert len(replies) == 1 and "not available" in str(replies[0]["text"])
        metrics = svc.metrics()
        assert metric_value(metrics, "ai_assistant_engine_waits_total") >= 1, "it waited before giving up"
        assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "engine_error"}) == 1
        # The apology is not part of the conversation: the next question reaches the model without it.
        engine.start()
        body, headers = signed_generic_request(message("evt-next"))
        assert svc.post(PATH, body, headers).status_code == 200
        assert [r["text"] for r in _settled_replies(receiver, "evt-next")] == [ANSWER]
        sent = engine.requests()[-1]["body"]["messages"]
        assert [m["role"] for m in sent] == ["system", "user"], sent
        assert httpx.get(svc.base + "/readyz", timeout=5).status_code == 200
    finally:
        svc.stop()
        engine.kill()
