"""Item 5 of issue 16, with real processes: quotas, the queue bound, the maximum message age and per-chat order.
Each shed message gets exactly one short reply through the normal delivery path (or, over a quota again, none, and is
counted); nothing else is lost. The load test is bench/load_bench.py in small (no timing assertions: the figures are
in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.load_bench import LoadConfig, run_load
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
BUSY = "Too busy, sorry."
SLOW_DOWN = "Slow down, please."


def _service(tmp_path: Path, receiver: ReplyReceiver, engine: EngineStandin, **sections: Any) -> ServiceProcess:
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "queue": {"busy_reply": BUSY, **sections.pop("queue", {})},
            "quotas": {"reply": SLOW_DOWN, **sections.pop("quotas", {})},
            **sections,
        },
    )
    return ServiceProcess(config, tmp_path / "data").start(timeout=120)


def _post(svc: ServiceProcess, event_id: str, chat_id: str = "chat-1", user_id: str = "u-1") -> int:
    body, headers = signed_generic_request({**message(event_id, chat_id=chat_id), "user_id": user_id})
    return svc.post(PATH, body, headers).status_code


def _finished(svc: ServiceProcess) -> float:
    """Messages that have left the queue, whatever their outcome (answered, busy, quota, dropped)."""
    return metric_value(svc.metrics(), "ai_assistant_answers_total")


def _texts(receiver: ReplyReceiver, event_id: str) -> list[str]:
    return [r["text"] for r in receiver.for_event(event_id)]


def test_a_short_load_is_answered_exactly_once_and_in_each_chats_order(tmp_path: Path) -> None:
    """20 msg/s for 5 s into a 2-second model over ten chats, with a user flooding a chat of their own: every
    acknowledged message gets exactly one reply in its chat's order, except the flooder's dropped ones (counted)."""
    # Ordinary users send at most 3 messages each: within a burst of 5, however slowly a busy machine sends.
    quotas = {"user_per_minute": 1, "user_burst": 5, "notice_interval_seconds": 3600}
    cfg = LoadConfig(
        rate=20, seconds=5, chats=10, users=40, flooders=1, flood_rate=4, max_age=600, drain_seconds=300, quotas=quotas
    )
    report = run_load(cfg, tmp_path, say=print)
    print(report.table())
    assert report.problems == []
    assert report.acked == report.sent == 120 and report.unacked == 0
    assert (report.lost, report.duplicates, report.order_violations) == (0, 0, 0)
    assert report.quota == 1, "the flooder is told once"
    assert report.quota_silent >= 1, "and the rest of their messages are dropped, counted"
    assert report.replies + report.quota_silent == report.acked
    assert report.answered == 100 + 20 - 1 - report.quota_silent
    assert report.max_depth_seen <= cfg.max_depth


def test_over_a_quota_one_polite_reply_then_dropped_and_counted(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start()
    svc = _service(
        tmp_path, receiver, engine, quotas={"user_per_minute": 0.01, "user_burst": 2, "notice_interval_seconds": 600}
    )
    try:
        events = [f"evt-quota-{i}" for i in range(5)]
        for i, event in enumerate(events):  # one user, five chats: the user's quota is what runs out
            assert _post(svc, event, chat_id=f"chat-{i}") == 200
        wait_until(lambda: _finished(svc) == 5, 120, "two answers, one quota notice and two dropped")
        assert [_texts(receiver, e) for e in events] == [[ANSWER], [ANSWER], [SLOW_DOWN], [], []]
        metrics = svc.metrics()
        assert metric_value(metrics, "ai_assistant_shed_total", {"reason": "quota"}) == 1
        assert metric_value(metrics, "ai_assistant_shed_total", {"reason": "quota_silent"}) == 2
        assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "dropped"}) == 2
        assert len(engine.requests()) == 2, "the model is never asked for a message over the quota"
        assert _post(svc, "evt-quota-0", chat_id="chat-0") == 200, "a re-delivery is still a duplicate"
    finally:
        svc.stop()
        engine.kill()


def test_a_message_that_waited_past_the_maximum_age_gets_one_busy_reply(
    tmp_path: Path, receiver: ReplyReceiver
) -> None:
    """One worker, a model that takes 8 s: the messages behind the first wait longer than queue.max_age_seconds and
    get the busy reply once each, without the model being asked."""
    engine = EngineStandin(tmp_path).start("--stall", "8")
    svc = _service(tmp_path, receiver, engine, queue={"max_age_seconds": 2}, worker={"concurrency": 1})
    try:
        events = [f"evt-old-{i}" for i in range(3)]
        for i, event in enumerate(events):
            assert _post(svc, event, chat_id=f"chat-{i}") == 200
        wait_until(lambda: _finished(svc) == 3, 120, "a reply to each message")
        replies = [_texts(receiver, e) for e in events]
        assert all(r in ([ANSWER], [BUSY]) for r in replies), replies
        busy = sum(r == [BUSY] for r in replies)
        assert busy >= 2, "the two behind the first waited at least one whole answer"
        metrics = svc.metrics()
        assert metric_value(metrics, "ai_assistant_shed_total", {"reason": "too_old"}) == busy
        assert metric_value(metrics, "ai_assistant_answers_total", {"outcome": "busy"}) == busy
        assert len(engine.requests()) == 3 - busy
    finally:
        svc.stop()
        engine.kill()


def test_a_full_queue_answers_503_and_the_redelivery_is_answered(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start("--stall", "3")
    svc = _service(tmp_path, receiver, engine, queue={"max_depth": 2, "max_age_seconds": 0}, worker={"concurrency": 1})
    try:
        assert _post(svc, "evt-full-1", chat_id="a") == 200
        assert _post(svc, "evt-full-2", chat_id="b") == 200
        body, headers = signed_generic_request(message("evt-full-3", chat_id="c"))
        refused = svc.post(PATH, body, headers)
        assert refused.status_code == 503 and refused.json()["error"] == "busy"
        assert metric_value(svc.metrics(), "ai_assistant_shed_total", {"reason": "queue_full"}) == 1
        wait_until(lambda: _finished(svc) >= 1, 120, "the first answer (room in the queue)")
        assert _post(svc, "evt-full-3", chat_id="c") == 200, "the platform's re-delivery is taken now"
        events = ["evt-full-1", "evt-full-2", "evt-full-3"]
        wait_until(lambda: _finished(svc) == 3, 120, "all three answers")
        assert [_texts(receiver, e) for e in events] == [[ANSWER]] * 3
    finally:
        svc.stop()
        engine.kill()


def test_two_quick_messages_in_one_chat_are_answered_in_order(tmp_path: Path, receiver: ReplyReceiver) -> None:
    """The first answer takes 6 s, the second none: with two workers the second would overtake the first."""
    engine = EngineStandin(tmp_path).start("--stall", "6", "--stall-count", "1")
    svc = _service(tmp_path, receiver, engine, worker={"concurrency": 2})
    try:
        assert _post(svc, "evt-first") == 200
        wait_until(engine.requests, 60, "the first message to reach the model")
        assert _post(svc, "evt-second") == 200
        wait_until(lambda: _texts(receiver, "evt-second"), 120, "the second answer")
        assert [r["event_id"] for r in receiver.received] == ["evt-first", "evt-second"]
    finally:
        svc.stop()
        engine.kill()
