"""Connector edits in the console apply to the running service at once (console/live.py): the real app with its
webhook edge, queue and workers, real SQLite, real HTTP replies on loopback and, for the in-flight case, the real
SmolLM2 model server. No restart anywhere in this file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from ai_assistant.app import create_app
from ai_assistant.settings import load_settings
from tests.console.conftest import NEW_SECRET, Console, add_users, make_console
from tests.helpers import SECRET, ReplyReceiver, message, queued_jobs, signed_generic_request, wait_until, write_config

TEAM_B = {
    "name": "team-b",
    "platform": "generic_im",
    "app_id": "b",
    "app_secret": NEW_SECRET,
    "webhook_url": "https://assistant.example/api/im/team-b",
    "reply_url": "http://127.0.0.1:9/replies-b",
    "group_mention_only": "on",
}


def send(console: Console, path: str, event_id: str, secret: str = SECRET) -> int:
    body, headers = signed_generic_request(message(event_id), secret)
    return console.client.post(path, content=body, headers=headers).status_code


def test_add_disable_enable_edit_delete_apply_without_a_restart(console: Console) -> None:
    console.login()
    assert send(console, "/api/im/team-b", "before", NEW_SECRET) == 404  # no such connector yet

    added = console.post("/admin/connectors/new", TEAM_B)
    assert added.status_code == 303 and added.headers["location"].endswith("saved=live")
    assert send(console, "/api/im/team-b", "b-1", NEW_SECRET) == 200  # its webhook answers at once
    assert send(console, "/api/im/team-b", "b-forged", SECRET) == 401  # with its own secret only
    assert "team-b" in console.client.get("/admin/connectors").text
    app = console.client.app
    assert "team-b" in app.state.parts.connectors  # type: ignore[attr-defined]

    assert console.post("/admin/connectors/team-b/disable").status_code == 303
    assert send(console, "/api/im/team-b", "b-2", NEW_SECRET) == 404  # a disabled connector's route is gone
    assert "team-b" not in app.state.parts.connectors  # type: ignore[attr-defined]
    assert send(console, "/api/im/callback", "a-1") == 200  # the untouched connector keeps answering

    assert console.post("/admin/connectors/team-b/enable").status_code == 303
    assert send(console, "/api/im/team-b", "b-3", NEW_SECRET) == 200

    # Moving a connector's webhook: the old path 404s, the new one answers, with nothing restarted.
    edit = {"app_id": "test", "app_secret": "", "reply_url": "http://127.0.0.1:9/r", "webhook_url": "/api/im/moved"}
    assert console.post("/admin/connectors/im-connector/edit", edit).status_code == 303
    assert send(console, "/api/im/callback", "a-2") == 404
    assert send(console, "/api/im/moved", "a-3") == 200

    assert console.post("/admin/connectors/team-b/delete").status_code == 303
    assert send(console, "/api/im/team-b", "b-4", NEW_SECRET) == 404
    listing = console.client.get("/admin/connectors").text
    assert 'id="pending"' not in listing and "not yet in the running service" not in listing
    # Everything that was accepted is in the queue, once each (the worker is off in this fixture).
    assert sorted(e for e, _, _ in queued_jobs(console.data_dir)) == ["a-1", "a-3", "b-1", "b-3"]


def test_a_file_the_running_service_cannot_take_is_reported_and_changes_nothing_live(console: Console) -> None:
    """connectors.yaml edited by hand into something the loader refuses, then any console save: the save is written
    (the console validated its own entry) but the running connectors stay as they were, and the page says why."""
    console.login()
    path = console.config_dir / "connectors.yaml"
    broken = yaml.safe_load(path.read_text())
    broken["im-connector"]["http_timeout_seconds"] = 999  # over the model's limit of 120
    path.write_text(yaml.safe_dump(broken))
    resp = console.post("/admin/connectors/new", TEAM_B)
    assert resp.status_code == 409
    assert "could not take it" in resp.text and "http_timeout_seconds" in resp.text
    assert send(console, "/api/im/team-b", "b-1", NEW_SECRET) == 404
    assert send(console, "/api/im/callback", "a-1") == 200


def test_a_message_in_flight_for_an_edited_connector_is_answered_once(tmp_path: Path, model_server: str) -> None:
    """The first reply_url refuses every reply, so the answer waits in the queue for a retry; the console then points
    the connector at a working reply_url, and the retry goes out through the edited connector, exactly once."""
    attempts: list[str] = []
    refusing = ReplyReceiver(refuse=lambda reply: attempts.append(reply["event_id"]) is None)
    working = ReplyReceiver()
    config = write_config(
        tmp_path / "config",
        reply_url=refusing.url,
        engine_url=model_server,
        assistant={"worker": {"max_attempts": 30, "retry_backoff_seconds": 0.2}},
    )
    data = tmp_path / "data"
    add_users(data)
    try:
        with TestClient(create_app(load_settings(config, data))) as client:
            console = Console(client, config, data)
            console.login()
            assert send(console, "/api/im/callback", "in-flight") == 200
            wait_until(lambda: "in-flight" in attempts, 300, "the first, refused delivery (the model answers first)")
            edit = {"app_id": "test", "app_secret": "", "reply_url": working.url, "webhook_url": "/api/im/callback"}
            assert console.post("/admin/connectors/im-connector/edit", edit).status_code == 303
            wait_until(lambda: working.for_event("in-flight"), 120, "the retry through the edited connector")
            wait_until(lambda: _states(data) == ["done"], 60, "the job to complete")
            parts = working.for_event("in-flight")
            assert len(parts) == len({p["webhook_id"] for p in parts}) == int(parts[0].get("parts", 1))
            assert refusing.received == []
    finally:
        refusing.close()
        working.close()


def _states(data: Path) -> list[Any]:
    return [state for _, state, _ in queued_jobs(data)]


def test_a_connector_the_config_still_names_cannot_be_disabled_or_deleted(tmp_path: Path) -> None:
    """answer_cache.connectors names im-connector: the service would refuse to start without it, so the console
    refuses before writing anything, and the running connector keeps answering."""
    with make_console(tmp_path, assistant={"answer_cache": {"connectors": ["im-connector"]}}) as console:
        console.login()
        assert console.post("/admin/connectors/new", TEAM_B).status_code == 303  # not the last one any more
        before = console.connectors_yaml()
        for action in ("disable", "delete"):
            resp = console.post(f"/admin/connectors/im-connector/{action}")
            assert resp.status_code == 409 and "answer_cache.connectors[0]" in resp.text
        assert console.connectors_yaml() == before
        assert send(console, "/api/im/callback", "a-1") == 200
        assert console.post("/admin/connectors/team-b/disable").status_code == 303  # one nothing names: allowed
