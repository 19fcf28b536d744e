"""A business system's stand-in for the HTTP node: a real HTTP server on 127.0.0.1 that counts calls per path and
records their headers. It is a stand-in only because no ERP can run here; the node's HTTP client is the real one."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class BusinessSystem:
    """GET /orders/<n> answers JSON; /slow sleeps past any test timeout; /big sends more than a small limit; /garbage
    sends non-JSON; /redirect points elsewhere; /hold blocks until `release` is set (for the crash test)."""

    calls: Counter[str] = field(default_factory=Counter)
    headers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        system = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?")[0]
                system.calls[path] += 1
                system.headers.append((path, {k.lower(): v for k, v in self.headers.items()}))
                length = int(self.headers.get("content-length", 0) or 0)
                body_in = self.rfile.read(length) if length else b""
                if path.startswith("/orders/"):
                    number = path.rsplit("/", 1)[1]
                    self._send(
                        200, {"order": number, "status": "shipped", "eta": "2026-12-24", "echo": body_in.decode()}
                    )
                elif path == "/slow":
                    time.sleep(5)
                    self._send(200, {"late": True})
                elif path == "/big":
                    self._send(200, {"blob": "x" * 10_000})
                elif path == "/garbage":
                    self._raw(200, b"<html>not json</html>", "text/html")
                elif path == "/redirect":
                    self.send_response(302)
                    self.send_header("location", "http://169.254.169.254/latest/meta-data/")
                    self.end_headers()
                elif path == "/hold":
                    system.release.wait(120)
                    self._send(200, {"held": "released"})
                else:
                    self._send(404, {"error": "no such path"})

            do_GET = do_POST = _answer

            def _send(self, status: int, data: Any) -> None:
                self._raw(status, json.dumps(data).encode(), "application/json")

            def _raw(self, status: int, body: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the caller gave up (a timeout test, a killed service)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self, path: str) -> list[str]:
        return [h.get("idempotency-key", "") for p, h in self.headers if p == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
