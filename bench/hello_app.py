"""The baseline: a bare FastAPI endpoint that reads the body and answers {"ok": true}, served the same way."""

from fastapi import FastAPI, Request

app = FastAPI(docs_url=None, redoc_url=None)


@app.post("/hello")
async def hello(request: Request) -> dict[str, bool]:
    await request.body()
    return {"ok": True}
