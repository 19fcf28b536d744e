"""channels.yaml: a routed channel gets a copy of every answer from the connectors it names, exactly once."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    SECRET,
    ReplyReceiver,
    ServiceProcess,
    message,
    signed_generic_request,
    venv_bin,
    wait_until,
    write_config,
)

AUDIT_SECRET = "whsec_" + "YXVkaXQtY2hhbm5lbC1zZWNyZXQtMzItYnl0ZXMhIQ=="  # pragma: allowlist secret


@pytest.mark.model
def test_answers_are_copied_to_a_routed_webhook_channel(tmp_path: Path, model_server: str) -> None:
    reply, audit = ReplyReceiver(), ReplyReceiver(secret=AUDIT_SECRET)
    config = write_config(tmp_path / "config", reply_url=reply.url, engine_url=model_server)
    (config / "channels.yaml").write_text(
        yaml.safe_dump(
            {
                "audit": {
                    "type": "webhook",
                    "answers_from": ["im-connector"],
                    "url": audit.url,
                    "secret": "${AUDIT_SECRET}",
                }
            }
        )
    )
    svc = ServiceProcess(config, tmp_path / "data", env={"AUDIT_SECRET": AUDIT_SECRET}).start()
    try:
        body, headers = signed_generic_request(message("evt-routed"))
        assert svc.post("/api/im/callback", body, headers).status_code == 200
        answer = wait_until(lambda: reply.for_event("evt-routed"), 60, "the reply")[0]
        copy = wait_until(lambda: audit.received, 30, "the audit copy")[0]
        time.sleep(1)
        assert len(reply.received) == 1 and len(audit.received) == 1
        assert copy["in_reply_to"] == "evt-routed" and copy["text"] == answer["text"]
        assert copy["webhook_id"] == "evt-routed:audit"
        assert AUDIT_SECRET not in svc.log.read_text()
    finally:
        svc.stop()
        reply.close()
        audit.close()


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ({"x": {"answers_from": ["im-connector"]}}, "channels.yaml: x.type: required key is missing"),
        ({"x": {"type": "pager"}}, "channels.yaml: x.type: no channel named 'pager'"),
        ({"x": {"type": "webhook", "answers_from": ["nope"], "url": "https://a.example", "secret": SECRET}},
         "channels.yaml: x.answers_from: no connector named 'nope'"),
        ({"x": {"type": "webhook", "url": "https://a.example", "secret": "plain"}}, "channels.yaml: x.secret:"),
        ({"x": {"type": "webhook", "url": "https://a.example", "secret": SECRET, "colour": 1}},
         "channels.yaml: x.colour: unknown key"),
        ({"x": {"type": "reply"}}, "channels.yaml: x.type: reply is built in"),
    ],
)  # fmt: skip
def test_bad_channels_file_is_one_line(tmp_path: Path, channels: dict[str, object], expected: str) -> None:
    config = write_config(tmp_path / "c", reply_url="http://127.0.0.1:9/r", engine_url="http://127.0.0.1:9/v1")
    (config / "channels.yaml").write_text(yaml.safe_dump(channels))
    result = subprocess.run(
        [venv_bin("ai-assistant"), "check-config", "--config-dir", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
