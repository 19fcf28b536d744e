"""A stand-in OpenAI-compatible model server, run as its own process so a test can kill it mid-answer and start it
again on the same port. It streams a fixed answer the way TGI and llama.cpp do (server-sent events), can fail its
first requests with a given status (and Retry-After), and can stall after the first token. Every chat request is
appended to a log file (one JSON line), so counts survive the process.

Used where what matters is the service's behaviour around the model (retries, deadlines, restarts), not the model's
text; the real SmolLM2 server is tested elsewhere (tests/service, tests/connectors)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

ANSWER = "Red, green and blue."


def _chunk(content: str | None, finish: str | None = None) -> str:
    delta = {"role": "assistant", "content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "standin",
        "system_fingerprint": "standin",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def build(
    log: Path, fail: int, status: int, retry_after: str | None, stall: float, stall_count: int, answer: str
) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [{"id": "standin", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        seen = len(log.read_text().splitlines()) if log.exists() else 0
        failing = seen < fail
        with log.open("a") as f:
            f.write(json.dumps({"at": time.time(), "status": status if failing else 200, "body": body}) + "\n")
        if failing:
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            return JSONResponse({"error": "stand-in failure"}, status_code=status, headers=headers)

        async def events() -> AsyncIterator[str]:
            words = answer.split(" ")
            yield _chunk(words[0])
            if stall and seen < fail + stall_count:
                await asyncio.sleep(stall)
            for word in words[1:]:
                yield _chunk(" " + word)
            yield _chunk(None, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--fail", type=int, default=0, help="fail this many requests (counted in --log) first")
    parser.add_argument("--status", type=int, default=503)
    parser.add_argument("--retry-after", default=None)
    parser.add_argument("--stall", type=float, default=0.0, help="seconds to stall after the first token")
    parser.add_argument("--stall-count", type=int, default=1_000_000, help="stall only the first N answers")
    parser.add_argument("--answer", default=ANSWER)
    args = parser.parse_args()
    app = build(args.log, args.fail, args.status, args.retry_after, args.stall, args.stall_count, args.answer)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
