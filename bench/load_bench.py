"""Load benchmark (issue 16, item 5): signed generic-IM webhooks at a fixed rate into the real service with a model
that takes 2 s per answer, on one host. It shows what backpressure does when messages come faster than the model can
answer them: the queue stays bounded, memory stays bounded, nothing is lost, nothing is sent twice, and each chat's
answers keep the order of its messages.

    .venv/bin/python bench/load_bench.py                       # 100 msg/s for 60 s (docs/benchmarks.md)
    .venv/bin/python bench/load_bench.py --rate 20 --seconds 5 # a quick look

Real parts: redis-server (append-only file, fsync every second as roles/redis sets it), `ai-assistant serve` on
loopback, the stand-in OpenAI-compatible model server of the fault tests (tests/faults/engine_standin.py) stalling 2 s
in every answer, and the stand-in platform of the tests (tests/helpers.py ReplyReceiver) that verifies each signed
reply. The load generator behaves like a platform: a 503 is delivered again after a second (bounded), an ack is final.

Ordinary users spread over many chats send within their quotas; `--flooders` users each send `--flood-rate`
messages a second into a chat of their own, so the quota path (one polite reply, the rest dropped and counted) is
measured too. Per-chat order is checked against the order in which the service acknowledged each chat's messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DEFAULT_POLL, WEBHOOK_PATH, Redis, rss_kib, standin_stack  # noqa: E402
from tests.faults.engine_standin import ANSWER  # noqa: E402
from tests.helpers import ReplyReceiver, ServiceProcess, metric_value, signed_generic_request  # noqa: E402

PATH = WEBHOOK_PATH
BUSY_REPLY = "Sorry, too busy right now."
QUOTA_REPLY = "Please slow down."


@dataclass(frozen=True)
class LoadConfig:
    rate: float = 100.0  # ordinary messages per second
    seconds: float = 60.0
    chats: int = 500
    users: int = 2000
    flooders: int = 1
    flood_rate: float = 2.0  # messages per second per flooder
    engine_seconds: float = 2.0
    concurrency: int = 64  # worker.concurrency (its maximum)
    max_age: float = 30.0  # queue.max_age_seconds
    max_depth: int = 2500  # queue.max_depth
    redeliveries: int = 60  # a 503 is delivered again after `redelivery_seconds`, at most this often
    redelivery_seconds: float = 1.0
    drain_seconds: float = 240.0
    # assistant.yaml `quotas:`, fixed here so that the figures do not move with the service's defaults
    quotas: dict[str, float] = field(
        default_factory=lambda: {"user_per_minute": 20, "user_burst": 10, "chat_per_minute": 60, "chat_burst": 30}
    )


@dataclass
class Report:
    config: LoadConfig
    sent: int = 0  # distinct messages
    posts: int = 0  # HTTP requests, redeliveries included
    acked: int = 0
    refused_503: int = 0  # queue full
    unavailable_503: int = 0  # the store did not answer in time (a busy machine)
    timeouts: int = 0  # no answer within 30 s: delivered again, like a platform would
    unacked: int = 0  # given up by the load generator after all redeliveries
    send_seconds: float = 0.0
    replies: int = 0
    answered: int = 0
    busy: int = 0
    quota: int = 0
    quota_silent: int = 0  # the service's count of messages dropped over a quota (no reply by design)
    lost: int = 0
    duplicates: int = 0
    order_violations: int = 0
    order_pairs: int = 0  # pairs of one chat's messages whose queueing order is certain (checked)
    max_depth_seen: int = 0
    rss_start_kib: int = 0
    rss_max_kib: int = 0
    rss_end_kib: int = 0
    redis_start_bytes: int = 0
    redis_max_bytes: int = 0
    redis_end_bytes: int = 0
    drained_after: float = 0.0
    problems: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        c = self.config
        return [
            ("offered", f"{c.rate:g} msg/s for {c.seconds:g} s + {c.flooders} flooder(s) at {c.flood_rate:g} msg/s"),
            ("model", f"{c.engine_seconds:g} s per answer, worker.concurrency {c.concurrency}"),
            ("limits", f"queue.max_depth {c.max_depth}, queue.max_age_seconds {c.max_age:g}"),
            ("quotas", ", ".join(f"{k} {v:g}" for k, v in c.quotas.items())),
            ("messages sent", f"{self.sent} ({self.sent / max(self.send_seconds, 1e-9):.1f} msg/s achieved)"),
            ("acked (200)", str(self.acked)),
            (
                "503 queue full / store unavailable, then delivered again",
                f"{self.refused_503} / {self.unavailable_503} posts; {self.unacked} never acked",
            ),
            ("client timeouts (30 s), then delivered again", str(self.timeouts)),
            ("replies", str(self.replies)),
            ("  model answers", str(self.answered)),
            ("  'too busy' (waited > max age)", str(self.busy)),
            ("  quota notices", str(self.quota)),
            ("dropped over a quota (no reply)", str(self.quota_silent)),
            ("lost", str(self.lost)),
            ("duplicates", str(self.duplicates)),
            ("per-chat order violations", str(self.order_violations)),
            ("  pairs of one chat's messages checked", str(self.order_pairs)),
            ("max queue depth / bound", f"{self.max_depth_seen} / {c.max_depth}"),
            (
                "service RSS start / max / end",
                f"{self.rss_start_kib // 1024} / {self.rss_max_kib // 1024} / {self.rss_end_kib // 1024} MiB",
            ),
            (
                "redis used_memory start / max / end",
                f"{self.redis_start_bytes // 2**20} / "
                f"{self.redis_max_bytes // 2**20} / "
                f"{self.redis_end_bytes // 2**20} MiB",
            ),
            ("queue drained", f"{self.drained_after:.0f} s after the last message"),
        ]

    def table(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in self.rows())


@dataclass
class Sent:
    event_id: str
    chat_id: str
    flooder: bool
    acked_at: float | None = None
    # When the first request that may have queued it went out (any but a 503 for a full queue, which queues nothing):
    # the message was queued after this, and before acked_at.
    order_key: float | None = None


IN_FLIGHT = 200  # requests the load generator has open at once (a platform's sender is bounded too)


async def _deliver(
    client: httpx.AsyncClient, base: str, msg: Sent, user: str, cfg: LoadConfig, r: Report, slots: asyncio.Semaphore
) -> None:
    """Deliver one message like a platform: again after a 503 or a timeout, a fresh signature each time. The caller
    has taken a slot for the first request."""
    body = {"type": "message", "event_id": msg.event_id, "chat_id": msg.chat_id, "user_id": user, "text": "Hi?"}
    for attempt in range(cfg.redeliveries + 1):
        if attempt:
            await asyncio.sleep(cfg.redelivery_seconds)
            await slots.acquire()
        raw, headers = signed_generic_request(body)
        r.posts += 1
        sent_at = time.monotonic()
        try:
            response = await client.post(base + PATH, content=raw, headers=headers)
            status, error = response.status_code, response.content
        except httpx.HTTPError:
            status, error = 0, b""
        finally:
            slots.release()
        queue_full = status == 503 and b'"busy"' in error
        if not queue_full and msg.order_key is None:
            msg.order_key = sent_at
        if status == 200:
            msg.acked_at = time.monotonic()
            r.acked += 1
            return
        if queue_full:
            r.refused_503 += 1
        elif status == 503:
            r.unavailable_503 += 1
        elif status == 0:
            r.timeouts += 1
        else:
            r.problems.append(f"{msg.event_id}: HTTP {status}")
    r.unacked += 1


async def _send_all(cfg: LoadConfig, base: str, r: Report, sent: list[Sent]) -> None:
    """Every message at its scheduled time (rate-paced, not a closed loop), each delivered in a task of its own. When
    IN_FLIGHT requests are open the schedule waits: the achieved rate is reported, never assumed."""
    schedule: list[tuple[float, Sent, str]] = []
    for i in range(int(cfg.rate * cfg.seconds)):
        user = i % cfg.users
        schedule.append((i / cfg.rate, Sent(f"load-{i}", f"chat-{user % cfg.chats}", False), f"user-{user}"))
    for f in range(cfg.flooders):
        for k in range(int(cfg.flood_rate * cfg.seconds)):
            schedule.append((k / cfg.flood_rate, Sent(f"flood-{f}-{k}", f"flood-chat-{f}", True), f"flooder-{f}"))
    schedule.sort(key=lambda s: s[0])
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    slots = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, pool=None), limits=limits) as client:
        started = time.monotonic()
        tasks = []
        for at, msg, user in schedule:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))  # yields even when behind
            await slots.acquire()
            sent.append(msg)
            tasks.append(asyncio.create_task(_deliver(client, base, msg, user, cfg, r, slots)))
        r.send_seconds = time.monotonic() - started
        await asyncio.gather(*tasks)
    r.sent = len(sent)


def _watch(svc: ServiceProcess, redis: Redis, r: Report, stop: asyncio.Event) -> Any:
    async def loop() -> None:
        assert svc.proc is not None
        while not stop.is_set():
            r.max_depth_seen = max(r.max_depth_seen, redis.depth())
            r.rss_max_kib = max(r.rss_max_kib, rss_kib(svc.proc.pid))
            r.redis_max_bytes = max(r.redis_max_bytes, redis.used_memory())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    return loop()


def _tally(r: Report, sent: list[Sent], receiver: ReplyReceiver) -> None:
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for reply in list(receiver.received):
        by_event[reply["event_id"]].append(reply)
    r.replies = sum(len(v) for v in by_event.values())
    texts = [v[0]["text"] for v in by_event.values()]
    r.answered, r.busy, r.quota = texts.count(ANSWER), texts.count(BUSY_REPLY), texts.count(QUOTA_REPLY)
    r.duplicates = sum(len(v) - 1 for v in by_event.values())
    acked = [m for m in sent if m.acked_at is not None]
    missing = [m for m in acked if m.event_id not in by_event]
    # Only a flooder's message may go without a reply, and only as many as the service counted as dropped.
    flooders_missing = sum(m.flooder for m in missing)
    r.lost = max(0, flooders_missing - r.quota_silent) + (len(missing) - flooders_missing)
    other = [t for t in texts if t not in (ANSWER, BUSY_REPLY, QUOTA_REPLY)]
    if other:
        r.problems.append(f"{len(other)} replies were neither an answer nor a shed reply, e.g. {other[0]!r}")
    # Per chat, replies must follow the order in which the messages were queued. From outside that order is certain
    # for a pair only when the first was acknowledged before any request that may have queued the second went out;
    # messages sent while another of the chat was still being acknowledged could be queued either way.
    arrival = {reply["event_id"]: i for i, reply in enumerate(receiver.received)}
    chats: dict[str, list[Sent]] = defaultdict(list)
    for m in acked:
        if m.event_id in arrival:
            chats[m.chat_id].append(m)
    for msgs in chats.values():
        for a, b in itertools.permutations(msgs, 2):
            if a.acked_at is not None and b.order_key is not None and a.acked_at < b.order_key:
                r.order_pairs += 1
                r.order_violations += arrival[b.event_id] < arrival[a.event_id]


async def _run(cfg: LoadConfig, workdir: Path, say: Any) -> Report:
    r = Report(cfg)
    assistant = {
        "worker": {"concurrency": cfg.concurrency, **DEFAULT_POLL},
        "engine": {"timeout_seconds": 60},
        "queue": {"max_depth": cfg.max_depth, "max_age_seconds": cfg.max_age, "busy_reply": BUSY_REPLY},
        "quotas": {"reply": QUOTA_REPLY, **cfg.quotas},
        "server": {"log_level": "WARNING"},
    }
    engine_args = ("--stall", str(cfg.engine_seconds))
    with standin_stack(workdir, assistant=assistant, engine_args=engine_args, redis=True) as running:
        svc, receiver, redis = running.svc, running.receiver, running.redis
        assert svc.proc is not None
        assert redis is not None
        r.rss_start_kib = r.rss_max_kib = rss_kib(svc.proc.pid)
        r.redis_start_bytes = r.redis_max_bytes = redis.used_memory()
        say(f"service up; sending {cfg.rate:g} msg/s for {cfg.seconds:g} s ...")
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch(svc, redis, r, stop))
        sent: list[Sent] = []
        await _send_all(cfg, svc.base, r, sent)
        finished = time.monotonic()
        say(f"sent {len(sent)} in {r.send_seconds:.1f} s; waiting for the queue to drain ...")
        deadline = finished + cfg.drain_seconds
        while redis.depth() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        r.drained_after = time.monotonic() - finished
        if redis.depth():
            r.problems.append(f"the queue still held {redis.depth()} messages after {cfg.drain_seconds:g} s")
        await asyncio.sleep(2.0)  # late duplicates, if any, arrive now
        stop.set()
        await watcher
        r.rss_end_kib = rss_kib(svc.proc.pid)
        r.redis_end_bytes = redis.used_memory()
        metrics = svc.metrics()
        r.quota_silent = int(metric_value(metrics, "ai_assistant_shed_total", {"reason": "quota_silent"}))
        _tally(r, sent, receiver)
        return r


def run_load(cfg: LoadConfig, workdir: Path, say: Any = print) -> Report:
    return asyncio.run(_run(cfg, workdir, say))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = LoadConfig()
    parser.add_argument("--rate", type=float, default=defaults.rate)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--chats", type=int, default=defaults.chats)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--flooders", type=int, default=defaults.flooders)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--max-age", type=float, default=defaults.max_age)
    parser.add_argument("--max-depth", type=int, default=defaults.max_depth)
    parser.add_argument("--engine-seconds", type=float, default=defaults.engine_seconds)
    args = parser.parse_args()
    cfg = LoadConfig(
        rate=args.rate, seconds=args.seconds, chats=args.chats, users=args.users, flooders=args.flooders,
        concurrency=args.concurrency, max_age=args.max_age, max_depth=args.max_depth,
        engine_seconds=args.engine_seconds,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        report = run_load(cfg, Path(tmp))
    print(report.table())
    for problem in report.problems[:20]:
        print("problem:", problem)
    ok = report.lost == 0 and report.duplicates == 0 and report.order_violations == 0 and not report.problems
    ok = ok and report.max_depth_seen <= cfg.max_depth
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
