"""Multi-part answers under faults (issue 16): redis-server killed and restarted (same append-only file) while the
platform is taking a part, and `kill -9` of the service between parts. The platform stand-in must see each part
exactly once, in order, with the model's text."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

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
LONG = " ".join(f"word{i}" for i in range(1500))  # about 13,000 characters: four parts of at most 4,000


def _parts(receiver: ReplyReceiver, event_id: str) -> list[int]:
    return [r["part"] for r in receiver.for_event(event_id)]


def _assert_whole_answer_once(receiver: ReplyReceiver, event_id: str) -> None:
    wait_until(lambda: (p := receiver.for_event(event_id)) and len(p) >= p[0]["parts"], 60, "all the parts")
    time.sleep(1.5)  # a repeated part, if any, arrives now
    replies = receiver.for_event(event_id)
    count = replies[0]["parts"]
    assert count >= 3 and [r["part"] for r in replies] == list(range(1, count + 1))
    assert " ".join(r["text"].strip() for r in replies).split() == LONG.split(), "the model's text, all of it"


def test_redis_restarts_while_the_platform_takes_a_part(tmp_path: Path, receiver: ReplyReceiver) -> None:
    redis = RedisProcess(tmp_path).start()
    engine = EngineStandin(tmp_path).start("--answer", LONG)
    in_part_two, go_on = threading.Event(), threading.Event()

    def slow_second_part(reply: dict[str, Any]) -> bool:
        if reply["part"] == 2 and not in_part_two.is_set():
            in_part_two.set()
            go_on.wait(30)  # the platform takes its time; Redis dies meanwhile
        return False  # accept

    receiver.refuse = slow_second_part
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "store": {"backend": "redis", "redis_url": redis.url},
            "worker": {"lease_seconds": 20},
        },
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        body, headers = signed_generic_request(message("evt-parts-redis"))
        assert svc.post(PATH, body, headers).status_code == 200
        assert in_part_two.wait(60), "part 2 never came"
        redis.kill9()
        go_on.set()  # part 2 is now posted and accepted, while its record cannot be written
        wait_until(lambda: "mark_part_sent of" in svc.log.read_text(), 30, "the record of part 2 to fail")
        redis.start()  # same port, same append-only file
        _assert_whole_answer_once(receiver, "evt-parts-redis")
        assert metric_value(svc.metrics(), "ai_assistant_answers_total", {"outcome": "answered"}) == 1
    finally:
        go_on.set()
        svc.stop()
        engine.kill()
        redis.stop()


def test_kill_9_between_parts_resumes_at_the_next_part(tmp_path: Path, receiver: ReplyReceiver) -> None:
    engine = EngineStandin(tmp_path).start("--answer", LONG)
    receiver.refuse = lambda reply: reply["part"] == 2  # the platform fails part 2 for now
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={"worker": {"lease_seconds": 3, "retry_backoff_seconds": 1}},
    )
    data = tmp_path / "data"
    first = ServiceProcess(config, data).start()
    try:
        body, headers = signed_generic_request(message("evt-parts-kill"))
        assert first.post(PATH, body, headers).status_code == 200
        wait_until(
            lambda: metric_value(first.metrics(), "ai_assistant_deliveries_total", {"outcome": "failed"}) >= 1,
            60,
            "part 2 to fail",
        )
        assert _parts(receiver, "evt-parts-kill") == [1]
        first.kill9()
        receiver.refuse = None
        second = ServiceProcess(config, data).start()
        try:
            _assert_whole_answer_once(receiver, "evt-parts-kill")
            assert len(engine.requests()) == 1, "resumed from the checkpoint, not regenerated"
        finally:
            second.stop()
    finally:
        first.stop()
        engine.kill()
