"""The state-store protocol. Two backends pass the same contract tests (tests/store/): SQLite for one host, Redis for
two or more instances behind a load balancer (blue/green and two zones need shared state)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..messages import ChatTurn, InboundMessage

# Job.shed: over a quota, the first message of a window gets one polite reply, the rest of the window none.
SHED_QUOTA = "quota"
SHED_QUOTA_SILENT = "quota_silent"

# Lanes by request type (pipeline/lanes.py decides which): each is a queue of its own, claimed by its own workers, so
# a burst of one kind cannot hold up another. To the store a lane is only a name on the job.
Lane = Literal["text", "long", "media"]
LANES: tuple[Lane, ...] = ("text", "long", "media")


@dataclass(frozen=True)
class Job:
    id: str
    message: InboundMessage
    attempts: int  # including this claim
    answer: str | None  # checkpointed once generated, so a restart resends the same text rather than a new one
    outcome: str | None
    parts_sent: int
    enqueued_at: float
    lease_token: str = ""  # changes at every claim: a worker whose lease was taken over must stop
    # The platform's id of the message a progressive reply was posted as (pipeline/progressive.py): a resumed job
    # edits that message instead of posting a second one.
    reply_ref: str | None = None
    # Why the edge admitted it without a model answer (SHED_QUOTA, SHED_QUOTA_SILENT), or None for an ordinary message.
    shed: str | None = None
    # Every claim so far, this one included, engine waits and hand-backs too (unlike `attempts`): 1 means the job
    # has never been started, which is when queue.max_age_seconds applies.
    claims: int = 1
    lane: Lane = "text"


@dataclass(frozen=True)
class DeadLetter:
    """A message that gave up, kept for an operator to look at, replay or drop (`ai-assistant dlq`, /admin/dlq)."""

    id: str
    message: InboundMessage
    attempts: int
    last_error: str
    dead_at: float
    answer: str | None
    parts_sent: int


@dataclass(frozen=True)
class Bucket:
    name: str  # e.g. user:<connector>:<user id>
    per_second: float  # refill rate
    burst: int  # capacity, and what a new bucket starts with


class QueueFull(Exception):
    """The queue already holds queue.max_depth messages: nothing was remembered or queued (the edge answers 503 and
    the platform delivers again later)."""


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class ConversationSummary:
    """One conversation in memory (connector:chat), for the console's conversations page."""

    conversation: str
    turns: int
    last_at: float


@runtime_checkable
class ConversationIndex(Protocol):
    """Listing conversations by recency, which the SQLite store can answer from its table. The Redis store keeps one
    list per conversation and no index of them, so it does not offer this (the console then looks one up by key)."""

    async def conversations(self, limit: int, offset: int) -> list[ConversationSummary]: ...


class StateStore(Protocol):
    async def enqueue(
        self,
        message: InboundMessage,
        dedupe_ttl: float,
        *,
        shed: str | None = None,
        max_depth: int = 0,
        lane: Lane = "text",
    ) -> bool:
        """Atomically: if none of the message's dedupe keys was seen within the TTL, remember them all and queue the
        message in `lane`. Returns False for a duplicate (nothing queued). Durable when it returns. `shed` marks a
        message admitted only for a canned reply (Job.shed). With `max_depth` > 0, raises QueueFull (and changes
        nothing) when that many messages are queued already, in all lanes together."""

    async def take(self, buckets: Sequence[Bucket]) -> str | None:
        """Token buckets (the inbound quotas), in one step: if every bucket has a token, take one from each and return
        None; otherwise take nothing and return the name of the first empty one. Redis keeps them for every instance;
        a bucket left alone until it is full again is forgotten (its key expires). The SQLite store serves one
        instance and keeps them in the process: a quota is not worth a disk flush per message."""

    async def remember(self, key: str, ttl: float) -> bool:
        """Set-if-absent with expiry: True the first time a key is seen within `ttl` seconds."""

    async def forget(self, key: str) -> None:
        """Drop a key set by `remember`."""

    async def hold(self, key: str, holder: str, ttl: float) -> bool:
        """Take or renew a named lease: True if `key` was free, expired or already `holder`'s, and it is now
        `holder`'s for `ttl` seconds; False while another holder's lease runs (one long connection per bot)."""

    async def let_go(self, key: str, holder: str) -> None:
        """Give a lease back early (a clean shutdown), if `holder` still holds it."""

    async def claim(self, lease_seconds: float, lanes: Sequence[Lane] = LANES) -> Job | None:
        """Lease the oldest visible job in one of `lanes` whose conversation has no older job still queued or in
        flight, in any lane, so answers in one chat keep the order of its messages while other chats go on in
        parallel. A job whose lease expires (its worker died) becomes visible again."""

    async def extend(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        """Renew the lease (the worker's heartbeat). False if another worker has claimed the job since."""

    # Every write of a job below is fenced: it takes effect only while `lease_token` is still the job's (no other
    # worker has claimed it since, and it is neither finished nor dead-lettered), and returns False otherwise, so a
    # worker that lost its lease can never overwrite the answer, move `parts_sent` back, append to the memory twice,
    # or release, finish or dead-letter a job another worker holds.

    async def save_answer(
        self,
        job_id: str,
        lease_token: str,
        answer: str,
        outcome: str,
        conversation: str,
        turns: list[ChatTurn],
        keep_turns: int,
    ) -> bool:
        """Checkpoint the answer and append the exchange to the conversation memory, in one transaction. Only the
        first checkpoint counts: a retry by the same holder returns True and changes nothing. `keep_turns` 0 leaves
        the conversation with no memory at all (`/reset`)."""

    async def mark_part_sent(self, job_id: str, lease_token: str, parts_sent: int) -> bool: ...

    async def save_reply_ref(self, job_id: str, lease_token: str, reply_ref: str) -> bool:
        """Record the id of the message a progressive reply was posted as; the next claim's `Job.reply_ref`."""

    async def complete(self, job_id: str, lease_token: str) -> bool:
        """The answer is fully delivered: the job leaves the queue."""

    async def release(
        self, job_id: str, lease_token: str, delay_seconds: float, error: str, *, count_attempt: bool = True
    ) -> bool:
        """Give the job back to be retried after a delay (delivery failed). `count_attempt=False` when the job only
        waits for something outside it (the engine, a shutdown): that claim does not count towards
        worker.max_attempts."""

    async def dead_letter(self, job_id: str, lease_token: str, error: str) -> bool:
        """Stop retrying; keep the job for inspection (and replay: `ai-assistant dlq`)."""

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest dead letters first."""

    async def dead_letter_count(self) -> int: ...

    async def get_dead_letter(self, job_id: str) -> DeadLetter | None: ...

    async def replay(self, job_id: str) -> bool:
        """Queue a dead letter again, visible now, with its attempts reset. Its answer checkpoint and the parts already
        sent are kept, so a replay sends only what the user has not received. False if there is no such dead letter."""

    async def drop(self, job_id: str) -> bool:
        """Delete a dead letter for good. False if there is no such dead letter."""

    async def history(self, conversation: str, limit: int) -> list[ChatTurn]: ...

    async def stats(self) -> QueueStats: ...

    async def lane_stats(self) -> dict[Lane, QueueStats]:
        """stats() for each lane, every lane present."""

    async def ping(self) -> None:
        """Raise if the store cannot be used."""

    async def close(self) -> None: ...

    # -- Answer cache (pipeline/answer_cache.py) -----------------------------------------------------------------
    # Answers to repeated questions, per connector. Each lookup counts a hit or a miss in the store itself, so that
    # `ai-assistant doctor` (another process) can report the hit ratio of every instance together.

    async def cache_get(self, connector: str, key: str) -> str | None:
        """The answer stored under `key` for this connector, or None (never stored, expired or evicted)."""

    async def cache_put(self, connector: str, key: str, answer: str, ttl: float, max_entries: int) -> None:
        """Keep `answer` for `ttl` seconds. Beyond `max_entries` for this connector the oldest entries are dropped."""

    # --- Workflow checkpoints and traces (workflows/runner.py) -------------------------------------------------
    # Kept apart from the queue methods above: a workflow run records one step per node it ran, as an opaque JSON
    # document the runner owns. The write is fenced like every job write; `step` numbers a run's steps from 0.

    async def save_workflow_step(self, job_id: str, lease_token: str, event_id: str, step: int, record: str) -> bool:
        """Checkpoint one finished node of the job's workflow run. Only the first write of a step counts: a retry by
        the same holder returns True and changes nothing. False if the lease is no longer `lease_token`'s."""

    async def workflow_steps(self, job_id: str) -> list[str]:
        """The job's checkpointed steps, in step order (what a resumed run starts from)."""

    async def workflow_trace(self, event_id: str) -> list[str]:
        """Every recorded step of the runs for messages with this event id, oldest first (kept for
        WORKFLOW_TRACE_RETENTION_SECONDS)."""


WORKFLOW_TRACE_RETENTION_SECONDS = 7 * 24 * 3600
