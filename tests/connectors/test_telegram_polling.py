"""Telegram long polling (`mode: stream`) against the stand-in's getUpdates (the Bot API cannot be reached here): the
real app on loopback with a real SQLite store, or two instances sharing one real redis-server. Updates are queued
once, confirmed (offset moved past them) only once they are in the store, replayed after a crash between the two and
queued once; wrong tokens, a set webhook and malformed updates are one log line and one metric each."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.connectors import producers as p
from tests.connectors.cases import TELEGRAM
from tests.connectors.conftest import AppFactory, RunningApp
from tests.connectors.standin import PlatformStandIn
from tests.helpers import free_port, wait_until


def _options(platform: PlatformStandIn) -> dict[str, Any]:
    options = {**TELEGRAM.options(platform.base), "mode": "stream", "poll_timeout_seconds": 1}
    del options["webhook_url"], options["secret_token"]  # no public URL, nothing calls us
    return options


def _state(app: RunningApp) -> str:
    return str(app.client.get("/readyz").json()["checks"]["stream:bot"])


def _ids(app: RunningApp) -> list[str]:
    return [event for event, _, _ in app.jobs()]


def test_updates_are_queued_once_and_confirmed_only_after_the_queue(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    app = make_app(_options(platform))
    wait_until(lambda: _state(app) == "ok", 30, "the poller")
    assert app.metric("ai_assistant_stream_up", connector="bot") == 1
    queued_when_confirmed: dict[int, list[str]] = {}
    platform.on_confirm = lambda offset: queued_when_confirmed.setdefault(offset, _ids(app))
    platform.push_update(p.telegram_update(501, message_id=1))
    platform.push_update(p.telegram_update(502, "hello everyone", message_id=2, group=True))  # no mention: skipped
    platform.push_update(p.telegram_update(503, message_id=3, group=True, mention=True))
    wait_until(lambda: not platform.updates, 30, "Telegram to forget the updates")
    assert _ids(app) == ["501", "503"]
    assert platform.offsets[0] is None  # a fresh process takes whatever Telegram still holds
    # Every offset that confirmed an update came after that update was in the SQLite file.
    assert queued_when_confirmed, "no getUpdates carried an offset"
    for offset, queued in queued_when_confirmed.items():
        assert {i for i in ("501", "503") if int(i) < offset} <= set(queued), (offset, queued)
    assert max(queued_when_confirmed) == 504


def test_a_crash_between_queue_and_confirmation_replays_the_update_and_it_is_queued_once(
    make_app: AppFactory, platform: PlatformStandIn
) -> None:
    first = make_app(_options(platform))
    wait_until(lambda: _state(first) == "ok", 30, "the poller")
    # The update is handed out; every getUpdates that would confirm it fails, as if the process died right after
    # writing the job (keyed on the offset, not on timing: a poll may be in flight or not when the update arrives).
    platform.fail_offsets_above = 601
    platform.push_update(p.telegram_update(601, message_id=1))
    wait_until(lambda: _ids(first) == ["601"], 30, "the job")
    wait_until(lambda: _state(first) == "down: disconnected", 30, "the failed confirmation")
    duplicates = first.metric("ai_assistant_duplicates_total", connector="bot")
    first.stop()
    assert [u["update_id"] for u in platform.updates] == [601]  # never confirmed
    platform.fail_offsets_above = None

    again = RunningApp(first.settings.config_dir, first.data_dir, workers=False).start()
    try:
        wait_until(lambda: not platform.updates, 30, "the replayed update to be confirmed")
        assert again.jobs() == [("601", "queued", 0)]
        assert again.metric("ai_assistant_duplicates_total", connector="bot") == duplicates + 1
    finally:
        again.stop()


def test_a_revoked_token_is_reported_and_polling_resumes_once_it_works(
    make_app: AppFactory, platform: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(_options(platform))
    wait_until(lambda: _state(app) == "ok", 30, "the poller")
    before = app.metric("ai_assistant_stream_errors_total", connector="bot", reason="unauthorized")
    with caplog.at_level(logging.WARNING):
        platform.bot_tokens.clear()
        wait_until(lambda: _state(app) == "down: unauthorized", 30, "the 401 to be reported")
    assert app.client.get("/readyz").status_code == 503
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="unauthorized") > before
    assert app.metric("ai_assistant_stream_up", connector="bot") == 0
    [line, *_] = [r.getMessage() for r in caplog.records if "unauthorized" in r.getMessage()]
    assert "HTTP 401 Unauthorized: bot_token is wrong or was revoked" in line
    assert p.TG_BOT_TOKEN not in caplog.text and p.TG_BOT_TOKEN.split(":")[1] not in caplog.text
    platform.bot_tokens.add(p.TG_BOT_TOKEN)
    wait_until(lambda: _state(app) == "ok", 60, "polling to resume")  # jittered back-off: < 1+2+4+8+16 s
    platform.push_update(p.telegram_update(701, message_id=1))
    wait_until(lambda: _ids(app) == ["701"], 30, "the job")


def test_a_webhook_still_set_is_named_as_the_reason(
    make_app: AppFactory, platform: PlatformStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    platform.webhook_set = True
    with caplog.at_level(logging.WARNING):
        app = make_app(_options(platform))
        wait_until(lambda: _state(app) == "down: conflict", 30, "the 409 to be reported")
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="conflict") >= 1
    assert any(
        "a webhook is set for this bot" in r.getMessage() and "deleteWebhook" in r.getMessage() for r in caplog.records
    )
    platform.webhook_set = False  # the operator called deleteWebhook
    wait_until(lambda: _state(app) == "ok", 60, "polling to start")


def test_a_malformed_update_is_counted_skipped_and_confirmed(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_options(platform))
    wait_until(lambda: _state(app) == "ok", 30, "the poller")
    before = app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed")
    platform.push_update({"update_id": 801, "message": {"message_id": 1, "chat": "not an object", "text": "hi"}})
    platform.push_update(p.telegram_update(802, message_id=2))
    wait_until(lambda: not platform.updates, 30, "both updates to be confirmed")
    assert _ids(app) == ["802"]
    assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed") == before + 1
    assert _state(app) == "ok"


def test_an_answer_that_is_not_a_list_of_updates_reconnects(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(_options(platform))
    wait_until(lambda: _state(app) == "ok", 30, "the poller")
    before = app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed")
    platform.script("/getUpdates", 200, {"ok": True, "result": {"update_id": 1}})
    wait_until(
        lambda: app.metric("ai_assistant_stream_errors_total", connector="bot", reason="malformed") == before + 1,
        30,
        "the malformed answer to be counted",
    )
    platform.push_update(p.telegram_update(901, message_id=1))
    wait_until(lambda: _ids(app) == ["901"], 60, "the job after reconnecting")


def _redis_jobs(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        ids = client.zrange("aia:enqueued", 0, -1)  # aia:queue holds only the first job of each chat
        return sorted(str(json.loads(client.hget(f"aia:job:{i}", "message"))["event_id"]) for i in ids)
    finally:
        client.close()


def test_two_instances_sharing_redis_poll_one_at_a_time_and_queue_once(
    make_app: AppFactory, platform: PlatformStandIn, redis_url: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/5"  # a database of its own on the shared test server
    redis.Redis.from_url(url).flushdb()
    store = {"store": {"backend": "redis", "redis_url": url}}
    a, b = make_app(_options(platform), **store), make_app(_options(platform), **store)
    wait_until(lambda: {_state(a), _state(b)} == {"ok", "standby"}, 60, "one poller and one standby")
    leader, standby = (a, b) if _state(a) == "ok" else (b, a)
    conflicts = leader.metric("ai_assistant_stream_errors_total", connector="bot", reason="conflict")
    for n in range(1001, 1006):
        platform.push_update(p.telegram_update(n, message_id=n))
    wait_until(lambda: not platform.updates, 30, "the updates to be confirmed")
    assert _redis_jobs(url) == [str(n) for n in range(1001, 1006)]
    # The leader queues 1006 and dies before confirming it: the standby takes the lease, gets 1006 again, and the
    # shared de-duplication keeps it to one job.
    platform.script("/getUpdates", 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}, times=1000)
    platform.push_update(p.telegram_update(1006, message_id=1006))
    wait_until(lambda: "1006" in _redis_jobs(url), 30, "the leader to queue 1006")
    leader.stop()
    platform.scripted.clear()
    wait_until(lambda: _state(standby) == "ok", 60, "the standby to take over")
    wait_until(lambda: not platform.updates, 30, "1006 to be confirmed by the new leader")
    assert _redis_jobs(url) == [str(n) for n in range(1001, 1007)]
    # One getUpdates at a time all along: Telegram never had to end one poll for another.
    assert standby.metric("ai_assistant_stream_errors_total", connector="bot", reason="conflict") == conflicts


def _redis_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (scripts/bootstrap installs it)"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: _pings(client), 20, "redis-server")
    finally:
        client.close()
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_an_update_that_could_not_be_queued_stays_at_telegram_until_the_store_is_back(
    make_app: AppFactory, platform: PlatformStandIn, tmp_path: Path
) -> None:
    """A real redis-server of this test's own, stopped while a poll is open: the update that poll hands out cannot be
    queued, so the offset stays below it and it is fetched again once the store is back."""
    port = free_port()
    server = _redis_server(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        # Long polls of 10 s: the store is stopped while one of them is open.
        app = make_app({**_options(platform), "poll_timeout_seconds": 10}, store={"backend": "redis", "redis_url": url})
        wait_until(lambda: _state(app) == "ok", 30, "the poller")
        polls = len(platform.offsets)
        wait_until(lambda: len(platform.offsets) > polls, 30, "a poll that started after the last one was answered")
        before = app.metric("ai_assistant_stream_errors_total", connector="bot", reason="store")
        server.terminate()
        server.wait(10)
        platform.push_update(p.telegram_update(1201, message_id=1))
        wait_until(lambda: _state(app) == "down: store", 30, "the store failure to be reported")
        assert app.metric("ai_assistant_stream_errors_total", connector="bot", reason="store") > before
        assert [u["update_id"] for u in platform.updates] == [1201]
        assert all(offset is None or offset <= 1201 for offset in platform.offsets)
        server = _redis_server(port, tmp_path)
        wait_until(lambda: not platform.updates, 90, "the update to be queued and confirmed")
        assert _redis_jobs(url) == ["1201"]
    finally:
        server.terminate()
        server.wait(10)


def test_a_replayed_update_is_answered_once_with_the_real_model(
    make_app: AppFactory, platform: PlatformStandIn, model_server: str
) -> None:
    first = make_app(_options(platform), engine_url=model_server, workers=True)
    wait_until(lambda: _state(first) == "ok", 30, "the poller")
    # Only the confirmation fails: a scripted 502 on every poll lost the race on a loaded CI machine whenever the
    # open 1 s poll ended before the update was pushed, and then no poll could ever hand it out.
    platform.fail_offsets_above = 1301
    platform.push_update(p.telegram_update(1301, message_id=1))
    wait_until(lambda: first.jobs() == [("1301", "done", 1)], 240, "the answer")
    first.stop()  # Telegram still holds 1301: the offset past it never reached Telegram
    assert [u["update_id"] for u in platform.updates] == [1301]
    platform.fail_offsets_above = None
    again = RunningApp(first.settings.config_dir, first.data_dir, workers=True).start()
    try:
        wait_until(lambda: not platform.updates, 30, "the replayed update to be confirmed")
        assert again.jobs() == [("1301", "done", 1)]
        [sent] = [c for c in platform.sends() if c.path.endswith("/sendMessage")]
        assert sent.body["reply_parameters"]["message_id"] == 1 and sent.text().strip()
    finally:
        again.stop()
