"""A stand-in for the part of Weaviate's surface that the store's connection touches: REST `/v1/meta` and the schema
calls of `_ensure_collections`, gRPC health (the start's probe) and `Search`. No Weaviate server can run on the
machines this project is tested on (no image, no package; weaviate-client's embedded mode downloads a binary), so
the TLS path to it (the store's verification, the data host's link in front of it) is proven against this instead.
It answers from memory and checks the API key on both channels, as Weaviate does with API-key authentication.

Run as a program (the VM suite copies it to the guest and runs it with the assistant's venv, which has grpcio and
weaviate-client's generated stubs): `python weaviate_standin.py --http-port P --grpc-port G --api-key K
[--cert C --key K]`; plain on loopback by default, TLS with --cert/--key. It prints `ready` when both listen.
"""

from __future__ import annotations

import argparse
import json
import ssl
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from weaviate.proto.v1 import health_weaviate_pb2, search_get_pb2, weaviate_pb2_grpc

VERSION = "1.28.4"


@dataclass
class Seen:
    """What the stand-in was asked, for the tests' assertions."""

    http: list[str] = field(default_factory=list)
    grpc: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class StandIn:
    def __init__(
        self,
        api_key: str,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> None:
        self.api_key, self.seen, self.classes = api_key, Seen(), {}  # type: ignore[var-annotated]
        self._http = ThreadingHTTPServer((host, http_port), _rest_handler(self))
        if cert is not None and key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert), str(key))
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Weaviate(self), self._grpc)
        # The stubs ship no health servicer (clients only): the one method, by hand.
        health = grpc.unary_unary_rpc_method_handler(
            self._health,
            request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
            response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
        )
        self._grpc.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": health}),)
        )
        address = f"{host}:{grpc_port}"
        if cert is not None and key is not None:
            credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
            self.grpc_port = self._grpc.add_secure_port(address, credentials)
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        self.http_port = self._http.server_address[1]

    def start(self) -> StandIn:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._grpc.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None)

    def _health(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.seen.grpc.append("Health")
        return health_weaviate_pb2.WeaviateHealthCheckResponse(
            status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
        )

    def authorised(self, header: str | None) -> bool:
        return header == f"Bearer {self.api_key}"


def _rest_handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            standin.seen.http.append(f"{self.command} {self.path}")
            if standin.authorised(self.headers.get("Authorization")):
                return True
            standin.seen.refused.append(f"{self.command} {self.path}")
            self._send(401, {"error": [{"message": "anonymous access not enabled"}]})
            return False

        def do_GET(self) -> None:
            if self.path == "/v1/.well-known/ready":  # open, as Weaviate's own (load balancers probe it)
                standin.seen.http.append(f"GET {self.path}")
                self._send(200)
                return
            if not self._allowed():
                return
            if self.path == "/v1/meta":
                self._send(200, {"hostname": "http://[::]:8080", "version": VERSION, "modules": {}})
            elif self.path.startswith("/v1/schema/"):
                name = self.path.removeprefix("/v1/schema/")
                self._send(200, standin.classes[name]) if name in standin.classes else self._send(404)
            else:
                self._send(404, {"error": [{"message": f"not in the stand-in: {self.path}"}]})

        def do_POST(self) -> None:
            if not self._allowed():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path == "/v1/schema":
                standin.classes[body["class"]] = body
                self._send(200, body)
            else:
                self._send(404, {"error": [{"message": f"not in the stand-in: {self.path}"}]})

    return Handler


def _check_key(standin: StandIn, context: grpc.ServicerContext, method: str) -> None:
    standin.seen.grpc.append(method)
    metadata = dict(context.invocation_metadata())
    if not standin.authorised(metadata.get("authorization")):  # type: ignore[arg-type]
        standin.seen.refused.append(method)
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "anonymous access not enabled")


class _Weaviate(weaviate_pb2_grpc.WeaviateServicer):  # type: ignore[misc]
    def __init__(self, standin: StandIn) -> None:
        self.standin = standin

    def Search(self, request: Any, context: grpc.ServicerContext) -> Any:
        _check_key(self.standin, context, f"Search {request.collection}")
        return search_get_pb2.SearchReply(took=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args()
    standin = StandIn(
        args.api_key,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        cert=args.cert,
        key=args.key,
    ).start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
