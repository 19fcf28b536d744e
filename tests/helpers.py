"""Builders shared by the tests: configs, signed generic-IM requests, a real reply receiver, a real service process.

Nothing here replaces our own code: the receiver verifies signatures with the `standardwebhooks` package directly, and
the service runs as the real `ai-assistant serve` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE="  # base64("test-secret-of-thirty-two-bytes!")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """moto's server (S3, Secrets Manager, ...: the stand-in for an AWS account) on a free loopback port; yields its
    endpoint. A VM guest reaches it as 10.0.2.2 through QEMU's slirp."""
    import pytest

    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.fail("moto_server is missing: pip install -e '.[dev]' installs moto[server]")
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(endpoint + "/moto-api/", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "moto_server")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(15)


def signed_generic_request(
    body: dict[str, Any] | list[Any] | bytes,
    secret: str = SECRET,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    msg_id = msg_id or f"msg_{time.monotonic_ns()}"
    when = datetime.fromtimestamp(timestamp, tz=UTC) if timestamp is not None else datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, raw.decode("utf-8", errors="surrogateescape"))
    return raw, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def message(event_id: str, text: str = "Name three colours.", chat_id: str = "chat-1") -> dict[str, Any]:
    return {"type": "message", "event_id": event_id, "chat_id": chat_id, "user_id": "u-1", "text": text}


@dataclass
class ReplyReceiver:
    """A stand-in for the IM platform's receiving API: a real HTTP server on loopback that records signed replies."""

    secret: str = SECRET
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    # A reply for which this returns True is answered 503 and not recorded (a platform that fails some sends).
    refuse: Callable[[dict[str, Any]], bool] | None = None
    bind_port: int = 0  # 0: any free port; a kept VM (VM_KEEP) was configured with an earlier run's port

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers, json_parse=False)
                except Exception:
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                reply = {"webhook_id": headers["webhook-id"], **json.loads(body)}
                status = 503 if receiver.refuse is not None and receiver.refuse(reply) else receiver.status
                if status < 300:
                    receiver.received.append(reply)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.bind_port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/replies"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_event(self, event_id: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r["event_id"] == event_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(
    config_dir: Path,
    *,
    reply_url: str,
    engine_url: str,
    assistant: dict[str, Any] | None = None,
    connectors: dict[str, Any] | None = None,
    words: str = "forbiddenword\n",
) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "engine": {"base_url": engine_url, "model": "local", "max_tokens": 24, "timeout_seconds": 30, "max_retries": 1},
        "worker": {"poll_interval_seconds": 0.05, "retry_backoff_seconds": 0.2},
        "server": {"json_logs": True},
        # Off unless a test asks for it: the knowledge base has its own tests (tests/knowledge) and loads a model.
        "knowledge": {"enabled": False},
    }
    for key, value in (assistant or {}).items():
        settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else value
    (config_dir / "assistant.yaml").write_text(yaml.safe_dump(settings))
    (config_dir / "connectors.yaml").write_text(
        yaml.safe_dump(
            connectors
            or {
                "im-connector": {
                    "platform": "generic_im",
                    "app_id": "test",
                    "app_secret": SECRET,
                    "webhook_url": "https://assistant.example/api/im/callback",
                    "bot_name": "AI助理",
                    "reply_url": reply_url,
                }
            },
            allow_unicode=True,
        )
    )
    (config_dir / "sensitive_words.txt").write_text(words)
    return config_dir


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class ServiceProcess:
    """`ai-assistant serve` as a real process on a free loopback port."""

    def __init__(self, config_dir: Path, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.config_dir, self.data_dir = config_dir, data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log = data_dir / f"service-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> ServiceProcess:  # a loaded machine takes long to import
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            venv_bin("ai-assistant"),
            "serve",
            "--config-dir",
            str(self.config_dir),
            "--data-dir",
            str(self.data_dir),
        ]
        cmd += ["--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        # Generous: the service imports its whole stack at start, which takes tens of seconds beside a QEMU VM and
        # the rest of the suite on two cores; a process that exits is reported at once by _healthy.
        wait_until(self._healthy, timeout, f"service on {self.base} (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.base + path, content=body, headers=headers, timeout=10)

    def metrics(self) -> str:
        return httpx.get(self.base + "/metrics", timeout=5).text

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def queued_jobs(data_dir: Path) -> list[tuple[str, str, int]]:
    """(event_id, state, attempts) of every job in the SQLite store, read straight from the database file."""
    db = data_dir / "state.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message, state, attempts FROM jobs ORDER BY rowid").fetchall()
    return [(json.loads(m)["event_id"], s, a) for m, s, a in rows]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total
