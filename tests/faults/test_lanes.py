"""Issue 25, item 3: lanes by request type. With 50 media messages queued ahead of it and the media step stuck, a text
question is still answered: the text lane's workers take it up while none of the media messages is done. Then the
media step is let go and every message is answered exactly once. Real service (create_app under uvicorn), real
redis-server, the stand-in model server, a stand-in media step (tests/faults/lanes_service.py), and the stand-in
platform receiver (tests/helpers.py ReplyReceiver). Timing is left to bench/lanes_bench.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.faults.engine_standin import ANSWER
from tests.faults.lanes_service import LanesService, MediaStandin
from tests.faults.procs import EngineStandin, RedisProcess
from tests.helpers import ReplyReceiver, message, metric_value, signed_generic_request, wait_until, write_config

PATH = "/api/im/callback"
LANES = ("text", "media")
BURST = 50


def test_a_text_question_is_answered_while_50_media_messages_wait(tmp_path: Path, receiver: ReplyReceiver) -> None:
    redis = RedisProcess(tmp_path).start()
    engine = EngineStandin(tmp_path).start()
    gate = threading.Event()
    media = MediaStandin(gate=gate)
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "store": {"backend": "redis", "redis_url": redis.url},
            "worker": {"concurrency": 2},
            "lanes": {"media_workers": 1, "long_workers": 1},
        },
    )
    svc = LanesService(config, tmp_path / "data", media).start()
    try:
        # The metrics registry is the test process's (the service runs in it), shared with earlier tests: count on.
        before = httpx.get(svc.base + "/metrics", timeout=10).text
        waits = {lane: metric_value(before, "ai_assistant_lane_wait_seconds_count", {"lane": lane}) for lane in LANES}
        media_ids = svc.queue_media(BURST)
        wait_until(lambda: media.started, 60, "a media worker to take up the first media message")
        assert svc.lane_depths()["media"] == BURST

        body, headers = signed_generic_request(message("text-question", chat_id="text-chat"))
        assert httpx.post(svc.base + PATH, content=body, headers=headers, timeout=30).status_code == 200
        wait_until(lambda: receiver.for_event("text-question"), 120, "the text question's answer")
        assert media.done == 0, "the media step is still stuck: the text answer did not wait for any media message"
        assert svc.lane_depths()["media"] == BURST, "all 50 media messages are still queued or in flight"
        metrics = httpx.get(svc.base + "/metrics", timeout=10).text
        assert metric_value(metrics, "ai_assistant_lane_wait_seconds_count", {"lane": "text"}) == waits["text"] + 1
        assert metric_value(metrics, "ai_assistant_lane_wait_seconds_count", {"lane": "media"}) == waits["media"] + 1
        assert metric_value(metrics, "ai_assistant_workers_configured") == 4  # 2 text, 1 long, 1 media

        gate.set()
        wanted = {"text-question", *media_ids}
        wait_until(lambda: wanted <= {r["event_id"] for r in receiver.received}, 300, "every media answer")
        time.sleep(1.0)  # a duplicate would arrive right behind its first copy
        counts = Counter(r["event_id"] for r in receiver.received)
        assert {event: n for event, n in counts.items() if n != 1} == {}, "each message is answered exactly once"
        assert [r["text"] for r in receiver.for_event("text-question")] == [ANSWER]
        assert media.done == BURST
        wait_until(lambda: svc.lane_depths() == {"text": 0, "long": 0, "media": 0}, 30, "every lane to drain")
    finally:
        gate.set()
        svc.stop()
        engine.kill()
        redis.stop()
