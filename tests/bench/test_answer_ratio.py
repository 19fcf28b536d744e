"""The short version of bench/answer_bench.py that runs in `make test` (issue 24, item 5): the whole answer path with
an engine that answers at once, SQLite store, 200 messages. It fails when the service's CPU per answered message,
divided by the bare stand-in engine's CPU per request measured in the same run, is more than 30 % above the ratio
recorded in bench/answer_baseline.json. A ratio of two processes on the same machine at the same time, never an
absolute time: a loaded CI machine slows both. It also holds exactly-once on the way (every message answered once)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1.3


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("answer_bench", ROOT / "bench" / "answer_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["answer_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_answer_path_cpu_ratio_holds() -> None:
    bench = _bench()
    reference = json.loads((ROOT / "bench" / "answer_baseline.json").read_text())["sqlite"]
    result = bench.measure("sqlite", messages=200, label="make test")
    bench.print_row(result)  # shown with -s and in the failure report
    assert not result.problems, result.problems
    assert result.duplicates == 0
    assert result.answered == result.messages
    assert result.ratio <= reference * TOLERANCE, (
        f"answer path: {result.cpu_ms_per_answer:.2f} ms CPU per answer is {result.ratio:.2f}x the bare engine's "
        f"{result.engine_cpu_ms_per_answer:.2f} ms in this run; the baseline is {reference:.2f}x (limit "
        f"{reference * TOLERANCE:.2f}x, bench/answer_baseline.json). Profile with bench/answer_bench.py --profile."
    )
