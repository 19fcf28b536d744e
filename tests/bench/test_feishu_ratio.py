"""The short version of the Feishu edge comparison that runs in `make test` (issue 24, item 5): Feishu's `verify` next
to lark-oapi's own event dispatcher on the same encrypted, signed requests, as CPU time of one process in turns, so a
loaded machine slows both alike. It fails when our advantage falls more than 30 % below the ratio recorded in
bench/answer_baseline.json. The HTTP-level comparison (wrk, both behind uvicorn) is `bench/ack_bench.py --payload
feishu`; it needs an idle machine and is not a test."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ack_bench_platforms import lark_dispatcher_cost

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1.3


def test_feishu_verify_stays_ahead_of_lark_oapis_dispatcher() -> None:
    reference = json.loads((ROOT / "bench" / "answer_baseline.json").read_text())["feishu_vs_lark"]
    ratio = lark_dispatcher_cost(n=1000, rounds=3)
    assert ratio >= reference / TOLERANCE, (
        f"lark-oapi's dispatcher now costs only {ratio:.2f}x Feishu's verify per request (baseline {reference:.2f}x, "
        f"limit {reference / TOLERANCE:.2f}x, bench/answer_baseline.json): profile connectors/feishu.py verify."
    )
