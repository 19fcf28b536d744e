"""CPU cost of the ack path without sockets: the service's ASGI app and the bare FastAPI baseline driven directly, in
one process on uvloop, with the same pre-signed requests as bench/ack_bench.py (32 in flight), reported per request.

    .venv/bin/python bench/ack_inprocess.py [--payload generic] [--requests 6000]

Less sensitive to a shared machine than the wrk benchmark (no load generator, no loopback TCP): use it to see what a
change to the edge, a connector or the store costs. It leaves out uvicorn's HTTP parsing, common to both apps.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ack_bench import PAYLOADS  # noqa: E402
from bench.hello_app import app as hello_app  # noqa: E402

Item = tuple[dict[str, Any], bytes]


def scope_for(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    raw = [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def drive(app: Any, items: list[Item], in_flight: int = 32) -> tuple[float, float, Counter[int]]:
    """Wall and CPU (all threads: the SQLite writer counts) microseconds per request, and the status codes."""
    statuses: Counter[int] = Counter()
    limit = asyncio.Semaphore(in_flight)

    async def one(scope: dict[str, Any], body: bytes) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        async with limit:
            await app(scope, receive, send)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(scope, body) for scope, body in items))
    n = len(items)
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6, statuses


async def main(payload: str, count: int) -> None:
    from ai_assistant.app import create_app
    from ai_assistant.settings import load_settings

    connector, _path, requests = PAYLOADS[payload](count + 500)
    work = Path(tempfile.mkdtemp(prefix="ack-inprocess-"))
    (work / "config").mkdir()
    (work / "config" / "connectors.yaml").write_text(yaml.safe_dump({"bench": connector}))
    (work / "config" / "assistant.yaml").write_text(
        yaml.safe_dump(
            {"worker": {"enabled": False}, "server": {"log_level": "WARNING"}, "filters": {"words_file": None}}
        )
    )
    service = create_app(load_settings(work / "config", work / "data"))
    ack: list[Item] = [(scope_for(p, h, b), b) for p, h, b in requests]
    hello: list[Item] = [(scope_for("/hello", h, b), b) for _, h, b in requests]
    async with service.router.lifespan_context(service):
        await drive(service, ack[:500])  # warm-up: imports, first commit
        a = await drive(service, ack[500:])
    await drive(hello_app, hello[:500])
    h = await drive(hello_app, hello[500:])
    print(f"payload={payload}, {count} requests, 32 in flight, one process on uvloop")
    for name, (wall, cpu, statuses) in (("signed webhook ack", a), ("bare FastAPI hello", h)):
        print(f"{name:20} wall {wall:7.1f} µs/request   cpu {cpu:7.1f} µs/request   statuses {dict(statuses)}")
    print(f"ratio (hello / ack): wall {h[0] / a[0]:.2f}   cpu {h[1] / a[1]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="generic")
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    uvloop.run(main(args.payload, args.requests))
