"""The engine over TLS with engine.ca_file, as the assistant reaches the model server through its TLS front on the
internal link (roles/tls_front, issue 23 item 4).

TGI and llama.cpp cannot run here: a tiny OpenAI-compatible HTTP server (the routes the engine calls: streamed chat
completions, TGI's /tokenize, /v1/models) behind a real TLS socket on loopback stands in for the front, with
certificates made with `cryptography` by the Redis TLS tests' builders. The engine's answer, token count and
readiness work with the right CA; a wrong CA, the system trust store and a certificate for another host name are
refused.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.errors import EngineUnavailable
from ai_assistant.messages import ChatTurn
from ai_assistant.settings import EngineSettings
from tests.store.test_redis_tls import CA, make_ca, server_cert

pytestmark = pytest.mark.anyio

ANSWER = "over the internal link"


class _StandIn(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "local", "object": "model"}]}).encode()
        self._send(200, "application/json", body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path == "/tokenize":  # TGI's: one entry per token
            self._send(200, "application/json", json.dumps([{"id": 1}] * len(request["inputs"].split())).encode())
            return
        if self.path != "/v1/chat/completions":
            self._send(404, "text/plain", b"not found")
            return
        chunks = [
            {
                "id": "1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "local",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": word}, "finish_reason": None}],
            }
            for word in (ANSWER.split(" ")[0], " " + " ".join(ANSWER.split(" ")[1:]))
        ]
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self._send(200, "text/event-stream", body)

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CA]:
    d = tmp_path_factory.mktemp("pki")
    return {"right": make_ca(d, "internal test CA"), "wrong": make_ca(d, "some other CA")}


def _serve(pki: dict[str, CA], directory: Path, dns: str, ip: str | None) -> Iterator[int]:
    crt, key = server_cert(pki["right"], directory, dns, ip)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CA]) -> Iterator[int]:
    """The stand-in with a certificate for 127.0.0.1 (the address the assistant connects to), like the front's."""
    yield from _serve(pki, tmp_path_factory.mktemp("front"), "model.internal", "127.0.0.1")


@pytest.fixture(scope="module")
def other_name(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CA]) -> Iterator[int]:
    """Signed by the right CA, for a name that is not the one in the URL."""
    yield from _serve(pki, tmp_path_factory.mktemp("other"), "elsewhere.internal", None)


def _engine(port: int, ca_file: Path | None) -> HFInferenceEngine:
    return HFInferenceEngine(
        EngineSettings(base_url=f"https://127.0.0.1:{port}/v1", ca_file=ca_file, max_retries=0, timeout_seconds=10)
    )


async def test_the_right_ca_verifies_the_front(front: int, pki: dict[str, CA]) -> None:
    engine = _engine(front, pki["right"].pem)
    assert await engine.chat([ChatTurn(role="user", content="hello")]) == ANSWER
    assert await engine.count_tokens(["three little words"]) == [3]
    assert await engine.ready()


@pytest.mark.parametrize("which", ["wrong", "system"])
async def test_another_ca_is_refused(front: int, pki: dict[str, CA], which: str) -> None:
    engine = _engine(front, pki["wrong"].pem if which == "wrong" else None)
    with pytest.raises(EngineUnavailable):
        await engine.chat([ChatTurn(role="user", content="hello")])
    assert not await engine.ready()


async def test_a_certificate_for_another_host_name_is_refused(other_name: int, pki: dict[str, CA]) -> None:
    engine = _engine(other_name, pki["right"].pem)
    with pytest.raises(EngineUnavailable):
        await engine.chat([ChatTurn(role="user", content="hello")])
    assert not await engine.ready()


async def test_doctor_checks_the_fronts_certificate_with_the_engines_ca(front: int, pki: dict[str, CA]) -> None:
    from ai_assistant.doctor.report import Status
    from ai_assistant.doctor.tls import tls_endpoint_check

    # Verified: what remains is the expiry check (the test certificate lives one day, below the failure threshold).
    trusted = await tls_endpoint_check("127.0.0.1", front, "engine", pki["right"].pem)
    assert "certificate expires in" in trusted.summary, trusted
    untrusted = await tls_endpoint_check("127.0.0.1", front, "engine")  # the system store
    assert untrusted.status is Status.FAIL and "unable to get local issuer" in untrusted.summary, untrusted
