"""The Feishu baseline: lark-oapi's own event dispatcher behind the same FastAPI/uvicorn stack as the hello baseline.

It is what an app written on Feishu's official SDK does before it can acknowledge: decrypt, check the signature and
the verification token, build the SDK's typed event and call a registered (no-op) handler. The request is handed over
the way lark-oapi's Flask adapter (lark_oapi/adapter/flask/parser.py) does it: path, raw body and headers. It stores
nothing, so the service's ratio against it also pays for the de-duplication and the durable enqueue.

The keys come from the environment so the benchmark and the producers of the signed requests share them.
"""

import os

import lark_oapi as lark
from fastapi import FastAPI, Request, Response

dispatcher = (
    lark.EventDispatcherHandler.builder(
        os.environ["BENCH_FEISHU_ENCRYPT_KEY"], os.environ["BENCH_FEISHU_TOKEN"], lark.LogLevel.ERROR
    )
    .register_p2_im_message_receive_v1(lambda event: None)
    .build()
)
app = FastAPI(docs_url=None, redoc_url=None)


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/im/feishu")
async def feishu(request: Request) -> Response:
    raw = lark.RawRequest()
    raw.uri, raw.body, raw.headers = request.url.path, await request.body(), dict(request.headers.items())
    # Starlette lower-cases header names and lark-oapi looks them up as Feishu spells them (X-Lark-...).
    raw.headers = {k.title(): v for k, v in raw.headers.items()}
    answer = dispatcher.do(raw)
    return Response(answer.content, status_code=answer.status_code, media_type="application/json")
