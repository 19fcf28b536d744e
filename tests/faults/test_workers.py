"""Item 1 of issue 16: supervised workers. A Redis restart (kill -9, same append-only file) while a message is claimed
must neither end the workers nor lose a message: the failure shows in /readyz and the metrics, the workers back off and
carry on, and every message is answered exactly once. A graceful stop hands the message in hand back at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin, RedisProcess
from tests.helpers import (
    ReplyReceiver,
    ServiceProcess,
    message,
    metric_value,
    queued_jobs,
    signed_generic_request,
    wait_until,
    write_config,
)

PATH = "/api/im/callback"


def _readyz(svc: ServiceProcess) -> httpx.Response:
    return httpx.get(svc.base + "/readyz", timeout=5)


def _post(svc: ServiceProcess, event_id: str, chat_id: str = "chat-1") -> None:
    body, headers = signed_generic_request(message(event_id, chat_id=chat_id))
    assert svc.post(PATH, body, headers).status_code == 200


def test_redis_killed_and_restarted_while_a_message_is_claimed(tmp_path: Path, receiver: ReplyReceiver) -> None:
    redis = RedisProcess(tmp_path).start()
    engine = EngineStandin(tmp_path).start("--stall", "6")  # the first answer takes a while: Redis dies meanwhile
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "store": {"backend": "redis", "redis_url": redis.url},
            "worker": {"lease_seconds": 6, "retry_backoff_seconds": 0.3},
        },
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        _post(svc, "evt-claimed")
        wait_until(engine.requests, 30, "the message to be claimed and sent to the model")
        redis.kill9()
        problems = wait_until(
            lambda: _readyz(svc).status_code == 503 and _readyz(svc).json()["checks"], 30, "/readyz to fail"
        )
        assert problems["store"].startswith("unavailable"), problems
        wait_until(lambda: "claim" in _readyz(svc).json()["checks"].get("workers", ""), 30, "a worker to say why")
        assert metric_value(svc.metrics(), "ai_assistant_worker_errors_total", {"step": "claim"}) >= 1
        configured = metric_value(svc.metrics(), "ai_assistant_workers_configured")
        assert configured == 4, "2 text workers (worker.concurrency), 1 long, 1 media (lanes)"
        assert metric_value(svc.metrics(), "ai_assistant_workers_up") < configured
        redis.start()  # same port, same append-only file
        wait_until(lambda: _readyz(svc).status_code == 200, 60, "/readyz to recover")
        # Each worker finds its own pooled connection from before the restart closed, once: wait for all of them.
        wait_until(
            lambda: metric_value(svc.metrics(), "ai_assistant_workers_up") == configured, 60, "every worker to recover"
        )
        _post(svc, "evt-after")  # acknowledged after the restart: must be answered too
        wait_until(lambda: receiver.for_event("evt-claimed") and receiver.for_event("evt-after"), 60, "both answers")
        time.sleep(1.0)
        for event in ("evt-claimed", "evt-after"):
            assert [r["text"] for r in receiver.for_event(event)] == [ANSWER], event
    finally:
        svc.stop()
        engine.kill()
        redis.stop()


def test_graceful_stop_hands_the_message_in_hand_back(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start("--stall", "120")  # would outlast any stop timeout
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={"worker": {"stop_grace_seconds": 1, "lease_seconds": 60}},
    )
    data = tmp_path / "data"
    first = ServiceProcess(config, data).start()
    try:
        _post(first, "evt-in-hand")
        wait_until(engine.requests, 30, "the message to reach the model")
        started = time.monotonic()
        first.stop()  # SIGTERM
        assert first.proc is not None and first.proc.returncode == 0
        assert time.monotonic() - started < 12, "the stop did not wait for the stalled answer"
        # Handed back: visible again now (not after the 60 s lease), and the cut-short claim is not an attempt.
        assert queued_jobs(data) == [("evt-in-hand", "queued", 0)]
        log = [json.loads(line) for line in first.log.read_text().splitlines() if line.startswith("{")]
        assert any("handing" in entry.get("message", "") for entry in log)
        engine.kill()
        engine.start()
        second = ServiceProcess(config, data).start()
        try:
            wait_until(lambda: receiver.for_event("evt-in-hand"), 30, "the answer from the next instance")
            time.sleep(1.0)
            assert [r["text"] for r in receiver.for_event("evt-in-hand")] == [ANSWER]
        finally:
            second.stop()
    finally:
        first.stop()
        engine.kill()
