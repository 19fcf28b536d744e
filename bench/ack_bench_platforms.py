"""Platform payloads for bench/ack_bench.py: `--payload feishu` (encrypted and signed, as Feishu sends with an Encrypt
Key) and `--payload slack` (signed Events API callbacks). Requests are made by the same producers the connector tests
use (tests/connectors/producers.py), each with its own event and message id, so none is a duplicate.

    .venv/bin/python bench/ack_bench.py --payload feishu
    .venv/bin/python bench/ack_bench.py --payload slack
"""

from __future__ import annotations

import time
from typing import Any

from tests.connectors import producers as p

Request = tuple[str, dict[str, str], bytes]


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
        req = p.feishu_request(p.feishu_message(f"bench-ev-{stamp}-{i}", f"om_bench_{stamp}_{i}"), path=path)
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
        event = p.slack_event(f"EvBench{stamp}x{i}", ts=f"{stamp}.{i:06d}")
        req = p.slack_request(event, path=path)
        requests.append((path, req.headers, req.body))
    return connector, path, requests


PLATFORM_PAYLOADS = {"feishu": feishu_payload, "slack": slack_payload}
