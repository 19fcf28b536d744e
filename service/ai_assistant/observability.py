"""Metrics (prometheus-client) and structured JSON logs with a request id. Secrets are scrubbed before any log line."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from pythonjsonlogger.json import JsonFormatter

from . import __version__

# `_created` series double the exposition for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

# ---------------------------------------------------------------------------------------------------------------
# Metrics. Every name and label is documented in docs/metrics.md; labels only take values from bounded sets
# (connector names come from config, reasons and outcomes are fixed here).
# ---------------------------------------------------------------------------------------------------------------
REQUESTS = Counter(
    "ai_assistant_request", "Webhook requests at the HTTP edge (the seed's metric)", ["status"]
)  # exposed as ai_assistant_request_total
RESPONSE_TIME = Histogram(
    "ai_assistant_response_time_seconds",
    "Webhook acknowledgement latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0),
)
REJECTED = Counter(
    "ai_assistant_webhook_rejected", "Webhook requests refused before anything was queued", ["connector", "reason"]
)
DUPLICATES = Counter(
    "ai_assistant_duplicates", "Platform retries and replays acknowledged without a second answer", ["connector"]
)
QUEUE_DEPTH = Gauge("ai_assistant_queue_depth", "Messages waiting for or being answered")
QUEUE_OLDEST_AGE = Gauge("ai_assistant_queue_oldest_age_seconds", "Age of the oldest unanswered message")
DEAD_LETTERS = Gauge("ai_assistant_dead_letters", "Dead letters waiting for an operator (ai-assistant dlq)")
# Lanes by request type (pipeline/lanes.py): the lane names are fixed (store/base.py LANES).
LANE_DEPTH = Gauge("ai_assistant_lane_queue_depth", "Messages waiting for or being answered, by lane", ["lane"])
LANE_WAIT = Histogram(
    "ai_assistant_lane_wait_seconds",
    "From message received to its first claim by a worker of its lane",
    ["lane"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
ANSWERS = Counter("ai_assistant_answers", "Messages finished, by outcome", ["connector", "outcome"])
ANSWER_DURATION = Histogram(
    "ai_assistant_answer_duration_seconds",
    "From message received to last answer part delivered",
    ["connector"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
ENGINE_DURATION = Histogram(
    "ai_assistant_engine_request_duration_seconds",
    "One inference call, retries included",
    ["engine"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
ENGINE_ERRORS = Counter("ai_assistant_engine_errors", "Inference calls that failed after bounded retries", ["engine"])
ENGINE_ATTEMPTS = Counter(
    "ai_assistant_engine_attempts", "Requests sent to the inference server, retries included", ["engine"]
)
ENGINE_WAITS = Counter(
    "ai_assistant_engine_waits", "Messages put back to wait for the engine (before their answer deadline)", ["engine"]
)
WORKERS_CONFIGURED = Gauge("ai_assistant_workers_configured", "Worker loops this instance should run")
WORKERS_UP = Gauge("ai_assistant_workers_up", "Worker loops running whose last store call succeeded")
WORKER_ERRORS = Counter(
    "ai_assistant_worker_errors", "Worker failures that were logged and backed off from, by step", ["step"]
)
STALE_WRITES = Counter(
    "ai_assistant_stale_writes",
    "Job writes refused because the worker's lease had passed to another worker (fencing), by operation",
    ["op"],
)
SHED = Counter(
    "ai_assistant_shed",
    "Messages not answered by the model under load: queue_full (503, the platform resends), too_old (waited "
    "past queue.max_age_seconds: busy reply), quota (over a quota: polite reply), quota_silent (dropped)",
    ["reason"],
)
DELIVERIES = Counter("ai_assistant_deliveries", "Outbound platform API sends", ["connector", "outcome"])
AMBIGUOUS_SENDS = Counter(
    "ai_assistant_ambiguous_sends",
    "Sends that may have been posted without a confirmation (timeout or connection lost after the request went out, "
    "HTTP 504), by handling: resent (the platform drops a copy with the same idempotency key) or not_resent",
    ["connector", "handling"],
)
STREAM_UP = Gauge(
    "ai_assistant_stream_up",
    "1 while this instance's long connection (mode: stream) delivers events; 0 connecting, down or standing by",
    ["connector"],
)
STREAM_ERRORS = Counter(
    "ai_assistant_stream_errors",
    "Long-connection failures and skipped malformed events, by reason (unauthorized, conflict, malformed, "
    "disconnected, store, error)",
    ["connector", "reason"],
)
ANSWER_CACHE_LOOKUPS = Counter(
    "ai_assistant_answer_cache_lookups",
    "Answer cache lookups in the connectors that opted in, by result: hit, miss, personal (conversation memory was in "
    "the prompt: not looked up, not stored) or error (the store failed: the engine answered)",
    ["connector", "result"],
)
FEEDBACK = Counter("ai_assistant_feedback", "User feedback on answers", ["connector", "rating"])
BUILD_INFO = Gauge("ai_assistant_build_info", "Version of the running assistant", ["version"])
BUILD_INFO.labels(version=__version__).set(1)


def create_series(connectors: list[str], engine: str) -> None:
    """Every label combination exists from the start at 0, so `increase()` sees the first event (an alert on the
    first dead letter would otherwise never fire: the series would appear already at 1)."""
    for c in connectors:
        DUPLICATES.labels(connector=c)
        ANSWER_DURATION.labels(connector=c)
        for outcome in ("answered", "engine_error", "blocked", "too_long", "dead", "busy", "quota", "dropped"):
            ANSWERS.labels(connector=c, outcome=outcome)
        for reason in ("signature", "stale", "malformed", "too_large", "forbidden"):
            REJECTED.labels(connector=c, reason=reason)
        for outcome in ("sent", "failed", "unconfirmed"):
            DELIVERIES.labels(connector=c, outcome=outcome)
        for handling in ("resent", "not_resent"):
            AMBIGUOUS_SENDS.labels(connector=c, handling=handling)
        for rating in ("positive", "negative"):
            FEEDBACK.labels(connector=c, rating=rating)
    for status in ("success", "error"):
        REQUESTS.labels(status=status)
    ENGINE_ERRORS.labels(engine=engine)
    ENGINE_ATTEMPTS.labels(engine=engine)
    ENGINE_WAITS.labels(engine=engine)
    for step in ("claim", "job", "release", "loop"):
        WORKER_ERRORS.labels(step=step)
    for lane in ("text", "long", "media"):  # store/base.py LANES; this module imports nothing of ours
        LANE_DEPTH.labels(lane=lane)
        LANE_WAIT.labels(lane=lane)
    for op in ("save_answer", "mark_part_sent", "complete", "release", "dead_letter"):
        STALE_WRITES.labels(op=op)
    ENGINE_DURATION.labels(engine=engine)
    for reason in ("queue_full", "too_old", "quota", "quota_silent"):
        SHED.labels(reason=reason)


# ---------------------------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------------------------
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Values that must never appear in a log line, whatever code tries to log them."""
    _secrets.update(v for v in values if v and len(v) >= 6)


def scrub(text: str) -> str:
    for s in _secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        if _secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
        return True


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if json_logs:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would print query strings (WeCom puts signatures there): our edge logs what matters instead.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpx2", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
