"""The seed's IP allowlist, through the real `ai-assistant serve` process: X-Forwarded-For counts only when the TCP
peer is a configured trusted proxy (uvicorn's own proxy-header handling is off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SECRET, ServiceProcess, message, queued_jobs, signed_generic_request, write_config

CONNECTOR = {
    "platform": "generic_im",
    "app_secret": SECRET,
    "webhook_url": "https://assistant.example/api/im/callback",
    "reply_url": "http://127.0.0.1:9/replies",
    "allowed_cidrs": ["10.9.9.0/24"],
}


@pytest.mark.parametrize(
    ("trusted", "forwarded", "status"),
    [
        ([], None, 403),  # loopback is not in the allowlist
        ([], "10.9.9.9", 403),  # a forged header from an untrusted peer is ignored
        (["127.0.0.0/8"], "10.9.9.9", 200),  # behind a trusted proxy the forwarded client counts
        (["127.0.0.0/8"], "10.9.9.9, 192.0.2.1", 403),  # the right-most untrusted hop is the client
        (["127.0.0.0/8"], "not-an-ip", 403),
    ],
)
def test_allowlist_uses_the_real_client_address(
    tmp_path: Path, trusted: list[str], forwarded: str | None, status: int
) -> None:
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"server": {"trusted_proxies": trusted}, "worker": {"enabled": False}},
        connectors={"im": CONNECTOR},
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        body, headers = signed_generic_request(message("evt-allow"))
        if forwarded:
            headers["x-forwarded-for"] = forwarded
        resp = svc.post("/api/im/callback", body, headers)
        assert resp.status_code == status, resp.text
        assert (queued_jobs(svc.data_dir) != []) == (status == 200)
        if status == 403:
            assert resp.json()["error"] == "forbidden"
    finally:
        svc.stop()
