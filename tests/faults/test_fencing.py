"""Item 2 of issue 16: fenced leases, with real processes. Two `ai-assistant serve` instances share one redis-server;
one is frozen (SIGSTOP) or killed (-9) while it holds a message. Each message must reach the platform stand-in exactly
once, with the model's answer, and a frozen worker that wakes up after losing its lease must change nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin, RedisProcess
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


def _config(
    tmp_path: Path, receiver: ReplyReceiver, engine: EngineStandin, redis: RedisProcess, engine_timeout: float = 30
) -> Path:
    return write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "store": {"backend": "redis", "redis_url": redis.url},
            "worker": {"lease_seconds": 3, "retry_backoff_seconds": 0.3},
            "engine": {"timeout_seconds": engine_timeout},
        },
    )


def _post(svc: ServiceProcess, event_id: str, chat_id: str = "chat-1") -> None:
    body, headers = signed_generic_request(message(event_id, chat_id=chat_id))
    assert svc.post(PATH, body, headers).status_code == 200


def _exactly_once(receiver: ReplyReceiver, events: list[str], text: str = ANSWER) -> None:
    wait_until(lambda: all(receiver.for_event(e) for e in events), 60, f"answers to {len(events)} messages")
    time.sleep(1.5)  # late duplicates, if any, arrive now
    for event in events:
        assert [r["text"] for r in receiver.for_event(event)] == [text], event


def test_two_instances_on_one_redis_answer_a_shared_stream_exactly_once(
    tmp_path: Path, receiver: ReplyReceiver
) -> None:
    redis = RedisProcess(tmp_path).start()
    engine = EngineStandin(tmp_path).start()
    config = _config(tmp_path, receiver, engine, redis)
    a = ServiceProcess(config, tmp_path / "a").start()
    b = ServiceProcess(config, tmp_path / "b").start()
    try:
        events = [f"evt-shared-{i}" for i in range(16)]
        for i, event in enumerate(events):
            _post(a if i % 2 else b, event, chat_id=f"chat-{i}")
        _exactly_once(receiver, events)
        assert len(engine.requests()) == len(events), "each message was generated once"
        answered = [metric_value(s.metrics(), "ai_assistant_answers_total", {"outcome": "answered"}) for s in (a, b)]
        assert sum(answered) == len(events)
        assert all(metric_value(s.metrics(), "ai_assistant_stale_writes_total") == 0 for s in (a, b))
    finally:
        a.stop()
        b.stop()
        engine.kill()
        redis.stop()


def test_a_frozen_worker_that_lost_its_lease_changes_nothing_when_it_wakes(
    tmp_path: Path, receiver: ReplyReceiver
) -> None:
    redis = RedisProcess(tmp_path).start()
    # The first answer takes 10 s: long enough for A to lose its lease while frozen, short enough to reach A later.
    engine = EngineStandin(tmp_path).start("--stall", "10", "--stall-count", "1")
    # A's engine timeout must outlast its freeze: on a loaded machine B takes a minute to start, and a timeout that
    # expired while A was stopped fires when it wakes, before A reads the answer waiting in its socket (a retry, a
    # third request: what the test would then count is the machine's speed, not the fencing).
    config = _config(tmp_path, receiver, engine, redis, engine_timeout=600)
    a = ServiceProcess(config, tmp_path / "a").start()
    b: ServiceProcess | None = None
    try:
        _post(a, "evt-frozen")
        wait_until(engine.requests, 30, "instance A to claim the message and ask the model")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)  # A holds the lease, then stops renewing it
        b = ServiceProcess(config, tmp_path / "b").start()
        wait_until(lambda: receiver.for_event("evt-frozen"), 60, "instance B to take over after the lease")
        wait_until(lambda: time.time() > engine.requests()[0]["at"] + 11, 30, "the first answer to be written")
        os.kill(a.proc.pid, signal.SIGCONT)  # A wakes with a stale lease and the model's answer in its socket
        wait_until(
            lambda: metric_value(a.metrics(), "ai_assistant_stale_writes_total", {"op": "save_answer"}) == 1,
            30,
            "A's checkpoint of its answer to be refused",
        )
        time.sleep(1.5)
        assert [r["text"] for r in receiver.for_event("evt-frozen")] == [ANSWER]
        assert len(engine.requests()) == 2
        assert metric_value(b.metrics(), "ai_assistant_answers_total", {"outcome": "answered"}) == 1
        assert metric_value(a.metrics(), "ai_assistant_answers_total", {"outcome": "answered"}) == 0
    finally:
        if a.proc is not None and a.proc.poll() is None:
            os.kill(a.proc.pid, signal.SIGCONT)
        a.stop()
        if b is not None:
            b.stop()
        engine.kill()
        redis.stop()


def test_kill_9_after_claim_and_after_the_checkpoint(tmp_path: Path, receiver: ReplyReceiver) -> None:
    """kill -9 while the model answers: the next instance claims the message after the lease and answers it. kill -9
    after the answer was checkpointed but before it could be delivered: the next instance sends that same answer,
    without asking the model again."""
    redis = RedisProcess(tmp_path).start()
    engine = EngineStandin(tmp_path).start("--stall", "30", "--stall-count", "1", "--answer", "first answer")
    config = _config(tmp_path, receiver, engine, redis)
    first = ServiceProcess(config, tmp_path / "first").start()
    try:
        _post(first, "evt-claimed")
        wait_until(engine.requests, 30, "the message to be claimed")
        first.kill9()
        engine.kill()
        engine.start("--answer", "first answer")
        receiver.status = 503  # the platform is down: the answer is checkpointed, its delivery fails
        second = ServiceProcess(config, tmp_path / "second").start()
        wait_until(lambda: len(engine.requests()) == 2, 30, "the next instance to take the message over")
        wait_until(
            lambda: metric_value(second.metrics(), "ai_assistant_deliveries_total", {"outcome": "failed"}) >= 1,
            30,
            "a failed delivery of the checkpointed answer",
        )
        second.kill9()
        engine.kill()
        engine.start("--answer", "a regenerated answer")
        receiver.status = 200
        third = ServiceProcess(config, tmp_path / "third").start()
        try:
            _exactly_once(receiver, ["evt-claimed"], "first answer")
            assert len(engine.requests()) == 2, "the checkpointed answer was resent, not regenerated"
        finally:
            third.stop()
    finally:
        first.stop()
        engine.kill()
        redis.stop()


def test_a_slow_model_outlasting_the_lease_is_asked_once_per_message(tmp_path: Path, receiver: ReplyReceiver) -> None:
    """Each answer takes three leases to generate: the heartbeat keeps the lease, so the other instance never takes
    the message over and the model is asked once per message."""
    redis = RedisProcess(tmp_path).start()
    engine = EngineStandin(tmp_path).start("--stall", "6")
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "store": {"backend": "redis", "redis_url": redis.url},
            "worker": {"lease_seconds": 2, "concurrency": 2},
            "engine": {"timeout_seconds": 30},
        },
    )
    a = ServiceProcess(config, tmp_path / "a").start()
    b = ServiceProcess(config, tmp_path / "b").start()
    try:
        events = [f"evt-slow-{i}" for i in range(4)]
        for i, event in enumerate(events):
            _post(a if i % 2 else b, event, chat_id=f"chat-{i}")
        _exactly_once(receiver, events)
        assert len(engine.requests()) == len(events)
        for svc in (a, b):
            assert metric_value(svc.metrics(), "ai_assistant_stale_writes_total") == 0
    finally:
        a.stop()
        b.stop()
        engine.kill()
        redis.stop()
