"""Lanes benchmark (issue 25, item 3): a text question's answer latency with a burst of 50 media messages queued,
against its idle value, in the same run. The goal is at most 2x.

    .venv/bin/python bench/lanes_bench.py                     # 50 media messages of 1 s each (docs/benchmarks.md)
    .venv/bin/python bench/lanes_bench.py --no-single-pool    # skip the comparison without lanes

Real parts: redis-server, the service's app (create_app) under uvicorn on loopback, the signed generic-IM webhook for
the questions, the stand-in platform receiver (tests/helpers.py ReplyReceiver) that verifies each reply, and the
stand-in model server of the fault tests (tests/faults/engine_standin.py). The media step (OCR, speech recognition)
is a stand-in that takes `--media-seconds` per message without using the CPU (tests/faults/lanes_service.py): the
benchmark measures who waits for a worker, not how fast this machine runs OCR.

Latency is from the webhook POST to the answer arriving at the receiver, one question at a time. The idle figure
comes first, then the burst: `--media` image messages in as many chats are queued the way a long connection queues
them, and once a media worker has taken up the first one, the same number of questions is asked again while the
media lane still holds messages (checked after each). The comparison run gives the media lane no workers of its own
(`lanes.media_workers: 0`, `lanes.long_workers: 0`), which is one pool for every kind, as before lanes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.engine_standin import ANSWER  # noqa: E402
from tests.faults.lanes_service import LanesService, MediaStandin  # noqa: E402
from tests.faults.procs import EngineStandin, RedisProcess  # noqa: E402
from tests.helpers import ReplyReceiver, message, signed_generic_request, wait_until, write_config  # noqa: E402

PATH = "/api/im/callback"


@dataclass(frozen=True)
class Run:
    idle: list[float]
    burst: list[float]
    media_left: list[int]  # media lane depth right after each question under the burst was answered


def ask(svc: LanesService, receiver: ReplyReceiver, event_id: str, timeout: float = 300) -> float:
    """Seconds from the POST to the answer at the receiver."""
    body, headers = signed_generic_request(message(event_id, chat_id=f"q-{event_id}"))
    started = time.perf_counter()
    resp = httpx.post(svc.base + PATH, content=body, headers=headers, timeout=30)
    if resp.status_code != 200:
        raise SystemExit(f"{event_id}: the webhook answered {resp.status_code}: {resp.text}")
    deadline = started + timeout
    while not receiver.for_event(event_id):
        if time.perf_counter() > deadline:
            raise SystemExit(f"{event_id}: no answer within {timeout:.0f} s")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    [reply] = receiver.for_event(event_id)
    if reply["text"] != ANSWER:
        raise SystemExit(f"{event_id}: unexpected answer {reply['text']!r}")
    return elapsed


def one_run(tmp: Path, args: argparse.Namespace, lanes: dict[str, int], label: str, samples: int) -> Run:
    (tmp / label).mkdir()
    redis = RedisProcess(tmp / label).start()
    engine = EngineStandin(tmp / label).start()
    receiver = ReplyReceiver()
    media = MediaStandin(seconds=args.media_seconds)
    config = write_config(
        tmp / label / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "store": {"backend": "redis", "redis_url": redis.url},
            # The shipped defaults, not the tests' faster polling: the figure is what a deployment sees.
            "worker": {"concurrency": args.text_workers, "poll_interval_seconds": 0.2},
            "lanes": lanes,
            "server": {"log_level": "WARNING"},
        },
    )
    svc = LanesService(config, tmp / label / "data", media).start()
    try:
        for i in range(2):  # warm-up: first requests pay for imports and connection pools
            ask(svc, receiver, f"{label}-warm-{i}")
        idle = [ask(svc, receiver, f"{label}-idle-{i}") for i in range(samples)]
        svc.queue_media(args.media, prefix=f"{label}-media")
        wait_until(lambda: media.started, 60, "a worker to take up the first media message")
        burst, left = [], []
        for i in range(samples):
            burst.append(ask(svc, receiver, f"{label}-burst-{i}"))
            left.append(svc.lane_depths()["media"])
        return Run(idle, burst, left)
    finally:
        svc.stop()
        engine.kill()
        redis.stop()
        receiver.close()


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(values):.3f} s, p90 {p90:.3f} s, max {ordered[-1]:.3f} s (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=int, default=50, help="media messages in the burst")
    parser.add_argument("--media-seconds", type=float, default=1.0, help="the stand-in media step, per message")
    parser.add_argument("--samples", type=int, default=10, help="text questions, idle and under the burst")
    parser.add_argument("--text-workers", type=int, default=2, help="worker.concurrency (the basic tier's)")
    parser.add_argument("--no-single-pool", action="store_true", help="skip the comparison run without lanes")
    args = parser.parse_args()

    load: list[tuple[str, Any]] = [("load average at start", os.getloadavg()), ("CPUs", os.cpu_count())]
    with tempfile.TemporaryDirectory(prefix="lanes-bench-") as tmp:
        lanes = one_run(Path(tmp), args, {"media_workers": 1, "long_workers": 1}, "lanes", args.samples)
        single = None
        if not args.no_single_pool:
            # One question is enough: it waits until the pool has worked through the burst ahead of it.
            single = one_run(Path(tmp), args, {"media_workers": 0, "long_workers": 0}, "single", 1)
    load.append(("load average at end", os.getloadavg()))

    print(f"burst: {args.media} media messages x {args.media_seconds:g} s; text workers {args.text_workers}")
    for name, value in load:
        print(f"{name}: {value}")
    ratio = statistics.median(lanes.burst) / statistics.median(lanes.idle)
    print(f"lanes (1 media worker, 1 long): idle   {summary(lanes.idle)}")
    print(f"lanes (1 media worker, 1 long): burst  {summary(lanes.burst)}")
    print(f"  media messages still queued after each burst question: {lanes.media_left}")
    print(f"  burst / idle (medians): {ratio:.2f}x (goal <= 2x): {'met' if ratio <= 2 else 'NOT met'}")
    if single is not None:
        print(f"one pool, no lanes:              idle   {summary(single.idle)}")
        print(f"one pool, no lanes:              burst  {summary(single.burst)}")
    if min(lanes.media_left) == 0:
        raise SystemExit("the burst was over before the last question: raise --media-seconds or --media")


if __name__ == "__main__":
    main()
