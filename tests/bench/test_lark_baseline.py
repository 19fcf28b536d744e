"""The Feishu ack benchmark's baseline (bench/lark_app.py) must do the work it stands for: lark-oapi's dispatcher
decrypting and verifying genuine Feishu requests. A baseline that accepted anything, or refused everything, would make
the ratio in docs/benchmarks.md meaningless."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.connectors import producers as p

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lark_client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("BENCH_FEISHU_ENCRYPT_KEY", p.FEISHU_KEY)
    monkeypatch.setenv("BENCH_FEISHU_TOKEN", p.FEISHU_TOKEN)
    spec = importlib.util.spec_from_file_location("lark_app", ROOT / "bench" / "lark_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return TestClient(module.app)


def _requests(n: int) -> list[tuple[str, dict[str, str], bytes]]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.ack_bench_platforms import feishu_payload

    _, _, requests = feishu_payload(n)
    return requests


def test_the_lark_baseline_accepts_the_benchmarks_requests(lark_client: TestClient) -> None:
    for path, headers, body in _requests(3):
        answer = lark_client.post(path, headers=headers, content=body)
        assert answer.status_code == 200, answer.text


def test_the_lark_baseline_refuses_a_forged_signature(lark_client: TestClient) -> None:
    path, headers, body = _requests(1)[0]
    forged = {k: ("0" * 64 if k.lower() == "x-lark-signature" else v) for k, v in headers.items()}
    answer = lark_client.post(path, headers=forged, content=body)
    assert answer.status_code != 200
    assert "signature" in answer.text
