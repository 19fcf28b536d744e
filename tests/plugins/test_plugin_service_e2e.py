"""An archive plugin serving real traffic: the example connector is installed from its signed zip, the service is
built with `registry_with_plugins` and runs under uvicorn on loopback, a request signed the plugin's way is
acknowledged, the real embedded model answers, and the plugin delivers the signed reply to a receiver on loopback
(the stand-in for the IM platform's API)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ai_assistant.app import create_app
from ai_assistant.plugins import registry_with_plugins
from ai_assistant.registry import Kind
from ai_assistant.settings import load_settings
from tests.helpers import free_port, wait_until, write_config

from .conftest import Env

pytestmark = pytest.mark.model
SECRET = "plugin-secret-0123456789"


def sign(ts: str, body: bytes) -> str:
    return hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()


class HmacReceiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.rejected = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                ts = self.headers.get("x-im-timestamp", "")
                if not hmac.compare_digest(sign(ts, body), self.headers.get("x-im-signature", "")):
                    outer.rejected += 1
                    self.send_response(401)
                else:
                    outer.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hmac_receiver() -> Iterator[HmacReceiver]:
    r = HmacReceiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_installed_connector_plugin_answers_through_the_service(
    env: Env, model_server: str, hmac_receiver: HmacReceiver, tmp_path: Path
) -> None:
    env.manager().install(env.archive().as_uri(), "connector", "im-connector")
    connectors = {
        "simple-im": {
            "platform": "im-connector",
            "secret": SECRET,
            "reply_url": hmac_receiver.url,
            "webhook_url": "https://assistant.example/api/simple-im",
        }
    }
    write_config(env.config_dir, reply_url="unused", engine_url=model_server, connectors=connectors)
    settings = load_settings(env.config_dir, env.data_dir)
    registry = registry_with_plugins(env.config_dir, env.data_dir)
    assert registry.entries[(Kind.CONNECTOR, "im-connector")].source == "plugin:im-connector"
    app = create_app(settings, registry)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "uvicorn")
        body = json.dumps({"event_id": "p-1", "chat_id": "room-7", "user_id": "u-1", "text": "Name a colour."}).encode()
        ts = str(int(time.time()))
        url = f"http://127.0.0.1:{port}/api/simple-im"
        forged = httpx.post(url, content=body, headers={"x-im-timestamp": ts, "x-im-signature": "0" * 64}, timeout=10)
        assert forged.status_code == 401
        resp = httpx.post(
            url, content=body, headers={"x-im-timestamp": ts, "x-im-signature": sign(ts, body)}, timeout=10
        )
        assert resp.status_code == 200, resp.text
        wait_until(lambda: hmac_receiver.received, 300, "the plugin's signed reply")
    finally:
        server.should_exit = True
        thread.join(30)
    [reply] = hmac_receiver.received[:1]
    assert reply["chat_id"] == "room-7"
    assert reply["text"].strip()
    assert reply["idempotency_key"] == "p-1:1"
    assert hmac_receiver.rejected == 0
