"""Business metric: user feedback on answers (generic IM `type: feedback`), counted once per feedback event."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import ServiceProcess, metric_value, queued_jobs, signed_generic_request, write_config


def test_feedback_is_counted_once_and_queues_nothing(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"worker": {"enabled": False}},
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        before = svc.metrics()
        assert 'ai_assistant_feedback_total{connector="im-connector",rating="negative"} 0.0' in before
        feedback = {"type": "feedback", "event_id": "fb-1", "rating": "positive", "answer_event_id": "evt-1"}
        for _ in range(2):  # a platform retry of the same feedback event
            body, headers = signed_generic_request(feedback)
            assert svc.post("/api/im/callback", body, headers).status_code == 200
        body, headers = signed_generic_request({**feedback, "event_id": "fb-2", "rating": "negative"})
        assert svc.post("/api/im/callback", body, headers).status_code == 200
        bad, headers = signed_generic_request({**feedback, "event_id": "fb-3", "rating": "meh"})
        resp = svc.post("/api/im/callback", bad, headers)
        assert resp.status_code == 400 and resp.json()["detail"].startswith("rating:")
        metrics = svc.metrics()
        assert metric_value(metrics, "ai_assistant_feedback_total", {"rating": "positive"}) == 1
        assert metric_value(metrics, "ai_assistant_feedback_total", {"rating": "negative"}) == 1
        assert queued_jobs(svc.data_dir) == []
    finally:
        svc.stop()
