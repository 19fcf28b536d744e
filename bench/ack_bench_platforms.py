"""Platform payloads for bench/ack_bench.py: `--payload feishu` (encrypted and signed, as Feishu sends with an Encrypt
Key) and `--payload slack` (signed Events API callbacks). Requests are made by the same producers the connector tests
use (tests/connectors/producers.py), each with its own event and message id, so none is a duplicate.

    .venv/bin/python bench/ack_bench.py --payload feishu
    .venv/bin/python bench/ack_bench.py --payload slack
    .venv/bin/python bench/ack_bench_platforms.py      # in-process verify cost next to json.loads of the same bodies
                                                       # and, for Feishu, next to lark-oapi's own event dispatcher
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.connectors import producers as p

Request = tuple[str, dict[str, str], bytes]


# QUOTA_FREE: every request comes from its own user in its own chat, as thousands of requests a second do in real
# traffic, so the per-user and per-chat quotas (settings.quotas: 30 and 60 a minute) never apply and the normal ack
# path is what is measured. From one user, every request past the quota's burst would take the shed path instead
# (an extra transaction for the quota notice).
def feishu_payload(n: int) -> tuple[dict[str, Any], str, list[Request]]:
    path = "/im/feishu"
    connector = {
        "platform": "feishu",
        "webhook_url": f"https://bench.example{path}",
        "api_base": "http://127.0.0.1:9",  # never called: workers are off while the ack path is measured
        "app_id": p.FEISHU_APP_ID,
        "app_secret": p.FEISHU_APP_SECRET,
        "verification_token": p.FEISHU_TOKEN,
        "encrypt_key": p.FEISHU_KEY,
    }
    stamp = int(time.time())
    requests = []
    for i in range(n):
        event = p.feishu_message(f"bench-ev-{stamp}-{i}", f"om_bench_{stamp}_{i}", chat_id=f"oc_bench_{i}")
        event["event"]["sender"]["sender_id"]["open_id"] = f"ou_bench_{i}"  # see QUOTA_FREE
        req = p.feishu_request(event, path=path)
        requests.append((path, req.headers, req.body))
    return connector, path, requests


def slack_payload(n: int) -> tuple[dict[str, Any], str, list[Request]]:
    path = "/im/slack"
    connector = {
        "platform": "slack",
        "webhook_url": f"https://bench.example{path}",
        "api_base": "http://127.0.0.1:9",
        "signing_secret": p.SLACK_SECRET,
        "bot_token": p.SLACK_BOT_TOKEN,
    }
    stamp = int(time.time())
    requests = []
    for i in range(n):
        event = p.slack_event(f"EvBench{stamp}x{i}", ts=f"{stamp}.{i:06d}", channel=f"D0BENCH{i}")
        event["event"]["user"] = f"U0BENCH{i}"  # see QUOTA_FREE
        req = p.slack_request(event, path=path)
        requests.append((path, req.headers, req.body))
    return connector, path, requests


PLATFORM_PAYLOADS = {"feishu": feishu_payload, "slack": slack_payload}


def verify_cost(n: int = 2000) -> None:
    """In-process cost of `connector.verify` per request, next to json.loads of the same bodies (the least any
    webhook handler does) measured in the same run."""
    import asyncio
    import json

    from ai_assistant.connectors.feishu import FeishuConfig, FeishuConnector
    from ai_assistant.connectors.slack import SlackConfig, SlackConnector
    from ai_assistant.messages import RawRequest

    async def timed(connector: Any, raws: list[RawRequest]) -> float:
        started = time.process_time()
        for raw in raws:
            await connector.verify(raw)
        return (time.process_time() - started) / len(raws)

    print(f"{'payload':10}{'verify us':>11}{'json.loads us':>15}{'ratio':>8}")
    for name, build, connector in (
        ("feishu", feishu_payload, lambda c: FeishuConnector("b", FeishuConfig.model_validate(c))),
        ("slack", slack_payload, lambda c: SlackConnector("b", SlackConfig.model_validate(c))),
    ):
        options, path, requests = build(n)
        raws = [RawRequest("POST", path, {k.lower(): v for k, v in h.items()}, {}, b) for _, h, b in requests]
        per_verify = asyncio.run(timed(connector(options), raws))
        started = time.process_time()
        for raw in raws:
            json.loads(raw.body)
        per_parse = (time.process_time() - started) / len(raws)
        print(f"{name:10}{per_verify * 1e6:11.0f}{per_parse * 1e6:15.1f}{per_verify / per_parse:8.0f}")


def lark_dispatcher_cost(n: int = 2000, rounds: int = 3) -> float:
    """Feishu's verify next to lark-oapi's EventDispatcherHandler.do on the same encrypted, signed requests, in turns
    (best of `rounds` each, CPU time of this process, so other processes on a shared machine do not count). The
    dispatcher decrypts, checks the signature and the token, and builds the SDK's typed event for a registered no-op
    handler: the work an app on the official SDK does before it can ack. Returns lark-oapi's cost over ours."""
    import asyncio

    import lark_oapi as lark

    from ai_assistant.connectors.feishu import FeishuConfig, FeishuConnector
    from ai_assistant.messages import RawRequest

    options, path, requests = feishu_payload(n)
    ours = FeishuConnector("b", FeishuConfig.model_validate(options))
    raws = [RawRequest("POST", path, {k.lower(): v for k, v in h.items()}, {}, b) for _, h, b in requests]
    dispatcher = (
        lark.EventDispatcherHandler.builder(p.FEISHU_KEY, p.FEISHU_TOKEN, lark.LogLevel.ERROR)
        .register_p2_im_message_receive_v1(lambda event: None)
        .build()
    )
    lark_requests = []
    for _, headers, body in requests:
        req = lark.RawRequest()
        req.uri, req.headers, req.body = path, dict(headers), body
        lark_requests.append(req)

    async def verify_all() -> float:
        started = time.process_time()
        for raw in raws:
            await ours.verify(raw)
        return (time.process_time() - started) / len(raws)

    def dispatch_all() -> float:
        started = time.process_time()
        for req in lark_requests:
            resp = dispatcher.do(req)
            assert resp.status_code == 200, resp.content
        return (time.process_time() - started) / len(lark_requests)

    best_ours, best_lark = float("inf"), float("inf")
    for _ in range(rounds):
        best_ours = min(best_ours, asyncio.run(verify_all()))
        best_lark = min(best_lark, dispatch_all())
    print(f"feishu verify {best_ours * 1e6:.0f} us, lark-oapi dispatcher {best_lark * 1e6:.0f} us per request: "
          f"{best_lark / best_ours:.2f}x")  # fmt: skip
    return best_lark / best_ours


if __name__ == "__main__":
    verify_cost()
    lark_dispatcher_cost()
