"""The overview's numbers, read from the service's own Prometheus registry (the same series /metrics exposes)."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import REGISTRY

ERROR_OUTCOMES = ("engine_error", "dead")


def _samples(name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name:
                out.append((sample.labels, sample.value))
    return out


def answers_by_outcome() -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in _samples("ai_assistant_answers_total"):
        totals[labels["outcome"]] = totals.get(labels["outcome"], 0.0) + value
    return totals


def latency_quantiles(qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[float, float] | None:
    """Quantiles of ai_assistant_answer_duration_seconds over every connector, interpolated inside the buckets the
    way PromQL's histogram_quantile does; None before the first answer."""
    buckets: dict[float, float] = {}
    for labels, value in _samples("ai_assistant_answer_duration_seconds_bucket"):
        bound = float(labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    total = buckets[bounds[-1]]
    out: dict[float, float] = {}
    for q in qs:
        rank = q * total
        lower, below = 0.0, 0.0
        for bound in bounds:
            if buckets[bound] >= rank:
                if math.isinf(bound):
                    out[q] = lower  # beyond the last finite bucket: its bound is the best honest answer
                else:
                    inside = buckets[bound] - below
                    out[q] = lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
                break
            lower, below = bound, buckets[bound]
    return out


@dataclass
class Rate:
    per_minute: float
    window_seconds: int | None  # None: averaged since the process started


class AnswerRate:
    """Answers per minute from the counter's increase between page views (kept for up to 10 minutes), or the average
    since the process started when there is no earlier sample yet."""

    def __init__(self, window: float = 600.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def observe(self, now: float | None = None) -> Rate:
        now = time.time() if now is None else now
        total = sum(v for k, v in answers_by_outcome().items())
        while self._samples and now - self._samples[0][0] > self.window:
            self._samples.popleft()
        self._samples.append((now, total))
        first_at, first_total = self._samples[0]
        if now - first_at >= 30:
            return Rate((total - first_total) * 60 / (now - first_at), int(now - first_at))
        started = _samples("process_start_time_seconds")
        uptime = now - started[0][1] if started else 0.0
        return Rate(total * 60 / uptime if uptime > 0 else 0.0, None)
