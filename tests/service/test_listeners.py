"""The service's listeners through the real `ai-assistant serve` process. How the webhook edge reads a body off the
wire (raw sockets): chunked bodies (no Content-Length) are held to the same limit, and a client that hangs up halfway
queues nothing. And where the metrics port binds."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    SECRET,
    ServiceProcess,
    free_port,
    message,
    metric_value,
    queued_jobs,
    signed_generic_request,
    wait_until,
    write_config,
)

PATH = "/api/im/callback"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"worker": {"enabled": False}, "server": {"max_body_bytes": 4096}},
        connectors={
            "im": {
                "platform": "generic_im",
                "app_secret": SECRET,
                "webhook_url": f"https://a.example{PATH}",
                "reply_url": "http://127.0.0.1:9/replies",
            }
        },
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    yield svc
    svc.stop()


def head(svc: ServiceProcess, headers: dict[str, str], framing: str) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{svc.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join([*lines, framing]) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def exchange(svc: ServiceProcess, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_chunked_body_is_read_whole_and_queued(service: ServiceProcess) -> None:
    body, headers = signed_generic_request(message("evt-chunked"))
    answer = exchange(service, head(service, headers, "Transfer-Encoding: chunked") + chunked(body, 7))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"event_id":"evt-chunked"' in answer
    assert [e for e, _, _ in queued_jobs(service.data_dir)] == ["evt-chunked"]


def test_a_chunked_body_over_the_limit_is_refused_without_a_declared_length(service: ServiceProcess) -> None:
    body, headers = signed_generic_request({**message("evt-big"), "text": "x" * 10_000})
    answer = exchange(service, head(service, headers, "Transfer-Encoding: chunked") + chunked(body))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error":"too_large"' in answer
    assert queued_jobs(service.data_dir) == []


def test_a_client_that_hangs_up_mid_body_queues_nothing(service: ServiceProcess) -> None:
    body, headers = signed_generic_request(message("evt-cut"))
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(head(service, headers, f"Content-Length: {len(body)}") + body[: len(body) // 2])
    wait_until(
        lambda: metric_value(service.metrics(), "ai_assistant_webhook_rejected_total", {"reason": "malformed"}) == 1,
        10,
        "the cut-off request counted as rejected",
    )
    assert queued_jobs(service.data_dir) == []
    # and the service goes on: the same message sent whole is accepted
    assert httpx.post(service.base + PATH, content=body, headers=headers, timeout=10).status_code == 200
    assert [e for e, _, _ in queued_jobs(service.data_dir)] == ["evt-cut"]


def test_the_metrics_port_can_bind_an_address_of_its_own(tmp_path: Path) -> None:
    metrics_port = free_port()
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        # 127.0.0.2 is a loopback address of its own on Linux: it stands in for a private monitoring interface
        assistant={"worker": {"enabled": False}, "server": {"metrics_port": metrics_port, "metrics_host": "127.0.0.2"}},
    )
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        wait_until(lambda: _answers(f"http://127.0.0.2:{metrics_port}/metrics"), 20, "metrics on 127.0.0.2")
        assert "ai_assistant_request_total" in httpx.get(f"http://127.0.0.2:{metrics_port}/metrics", timeout=5).text
        assert not _answers(f"http://127.0.0.1:{metrics_port}/metrics"), "bound to its own address only"
        assert httpx.get(svc.base + "/metrics", timeout=5).status_code == 404, "and not served on the main port"
    finally:
        svc.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.ConnectError:
        return False


def test_under_a_root_path_webhooks_take_fastapis_own_route(tmp_path: Path) -> None:
    """AssistantApp dispatches webhooks ahead of FastAPI only without a root_path (ADR 0005); with one, the same
    endpoint answers through the route it is also registered as."""
    from fastapi.testclient import TestClient

    from ai_assistant.app import create_app
    from ai_assistant.settings import load_settings

    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"worker": {"enabled": False}},
    )
    app = create_app(load_settings(config, tmp_path / "data"))
    app.root_path = "/assistant"
    body, headers = signed_generic_request(message("evt-root-path"))
    with TestClient(app) as client:
        resp = client.post(PATH, content=body, headers=headers)
        assert resp.status_code == 200 and resp.json()["event_id"] == "evt-root-path"
        assert client.get(PATH).status_code == 405
    assert [e for e, _, _ in queued_jobs(tmp_path / "data")] == ["evt-root-path"]
