"""The worker loop: claim -> input adapters -> filter -> memory -> (retrieval) -> engine -> filter -> channel -> done.

Exactly-once answers across restarts: the queue lease makes a crashed worker's job visible again; the generated answer
is checkpointed before anything is sent, so a resumed job resends the same text; each delivered part is recorded, and
every part carries an idempotency key derived from the event id and part number for the platform to de-duplicate the
one part that may have been sent just before a crash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from ..channels.base import OutputChannel
from ..channels.loader import RoutedChannel
from ..connectors.base import AnswerMode, Connector, MemoryScope
from ..connectors.media import MediaUnavailable, describe
from ..engines.base import estimate_tokens
from ..errors import DeliveryFailed, DeliveryUncertain, EngineUnavailable
from ..inputs._media import note
from ..knowledge.grounding import GENERAL_PROMPT, general_answer
from ..messages import Attachment, ChatTurn, InboundMessage, OutboundText
from ..observability import (
    ANSWER_DURATION,
    ANSWERS,
    DEAD_LETTERS,
    ENGINE_WAITS,
    LANE_DEPTH,
    LANE_WAIT,
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    SHED,
    STALE_WRITES,
    WORKER_ERRORS,
    request_id,
)
from ..settings import Settings
from ..store import Job, StateStore
from ..store.base import SHED_QUOTA_SILENT
from .adapters import InputAdapter, message_text
from .answer_cache import AnswerCache
from .commands import RESET_OUTCOME, Commands
from .filters import SensitiveWordFilter
from .progressive import Progress
from .supervisor import WorkerState, sleep_unless_stopped

if TYPE_CHECKING:
    from ..workflows.runner import WorkflowRunner

log = logging.getLogger(__name__)

MAX_ENGINE_WAIT_SECONDS = 60.0
BUSY = "busy"  # the outcome of a message answered with queue.busy_reply


def _waited(job: Job) -> float:
    return time.time() - (job.message.received_at or job.enqueued_at)


class LeaseLost(Exception):
    """A fenced write was refused (store/base.py): another worker claimed the job since this one did."""


@dataclass(frozen=True)
class Grounding:
    """What retrieval adds: extra system text (instructions only), a delimited context block of retrieved data that
    goes into the user's turn, never the system role (documents come from anyone who can add a file), a sources
    footer, or a no-hit answer that replaces the model's."""

    system: str = ""
    documents: tuple[str, ...] = ()  # delimited <document> elements, best first; sent inside <documents>
    footer: str = ""
    no_hit_answer: str | None = None


Retriever = Callable[[InboundMessage, str], Awaitable[Grounding]]


@dataclass
class Pipeline:
    settings: Settings
    store: StateStore
    engine: object  # an Engine (engines/base.py); typed loosely so third-party engines need not subclass anything
    connectors: Mapping[str, Connector]
    channel: OutputChannel
    input_filter: SensitiveWordFilter
    output_filter: SensitiveWordFilter
    adapters: dict[str, InputAdapter] = field(default_factory=dict)
    retriever: Retriever | None = None
    routed: list[RoutedChannel] = field(default_factory=list)
    answer_cache: AnswerCache | None = None
    workflows: WorkflowRunner | None = None  # config/workflows/: a matching trigger runs its workflow (_respond)
    commands: Commands = field(default_factory=Commands)

    async def run(self, stop: asyncio.Event, state: WorkerState | None = None) -> None:
        """One worker: poll the queue until `stop` is set. Store failures are logged with their cause and backed off
        from (pipeline/supervisor.py keeps the state that /readyz and the metrics read); they never end the loop."""
        state = state or WorkerState("worker")
        worker = self.settings.worker
        while not stop.is_set():
            try:
                job = await self.store.claim(worker.lease_seconds, state.lanes)
            except Exception as exc:
                delay = state.failed("claim", exc)
                log.warning(
                    "%s cannot claim (%s: %s); trying again in %.1f s", state.name, type(exc).__name__, exc, delay
                )
                await sleep_unless_stopped(stop, delay)
                continue
            state.ok()
            if job is None:
                await sleep_unless_stopped(stop, worker.poll_interval_seconds)
                continue
            if job.claims == 1:  # its first claim: how long it queued in its lane before any worker was free for it
                LANE_WAIT.labels(lane=job.lane).observe(max(0.0, _waited(job)))
            await self._work(job, state, stop)

    async def _work(self, job: Job, state: WorkerState, stop: asyncio.Event) -> None:
        token = request_id.set(job.message.event_id)
        heartbeat = asyncio.create_task(self._heartbeat(job))
        work = asyncio.create_task(self._shed_or_process(job, heartbeat))
        try:
            if not await self._finish_or_hand_back(job, work, stop):
                return
            exc = work.exception()
            if isinstance(exc, LeaseLost):  # not a failure of the job: the worker that holds it now carries on
                log.warning("%s", exc)
            elif exc is not None:  # one bad job must not end the worker (nor make it unready); retried after a backoff
                WORKER_ERRORS.labels(step="job").inc()
                ceiling = min(MAX_ENGINE_WAIT_SECONDS, self.settings.worker.retry_backoff_seconds * 2**job.attempts)
                delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)
                log.error("job %s failed (%s: %s); retrying in %.1f s", job.id, type(exc).__name__, exc, delay,
                          exc_info=exc)  # fmt: skip
                await self._release_quietly(job, delay, f"{type(exc).__name__}: {exc}", state)
        finally:
            heartbeat.cancel()
            request_id.reset(token)

    async def _finish_or_hand_back(self, job: Job, work: asyncio.Task[None], stop: asyncio.Event) -> bool:
        """Wait for the job; once `stop` is set give it worker.stop_grace_seconds more, then cancel it and hand it
        back to the queue at once (the claim does not count as an attempt). True if the job ran to its end."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await asyncio.wait({work}, timeout=self.settings.worker.stop_grace_seconds)
        finally:
            stopping.cancel()
        if work.done():
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        log.warning("shutting down: handing %s back to the queue", job.id)
        await self._release_quietly(job, 0.0, "handed back at shutdown", None, count_attempt=False)
        return False

    async def _release_quietly(
        self, job: Job, delay: float, error: str, state: WorkerState | None, *, count_attempt: bool = True
    ) -> None:
        """Release, or if the store is down too, leave the job to its lease: it becomes visible again by itself."""
        try:
            released = await self.store.release(job.id, job.lease_token, delay, error, count_attempt=count_attempt)
            if not released:
                STALE_WRITES.labels(op="release").inc()
                log.warning("did not release %s: another worker holds it now", job.id)
        except Exception as exc:
            if state is not None:
                state.failed("release", exc)
            log.warning("could not release %s (%s: %s); its lease will expire", job.id, type(exc).__name__, exc)

    async def _shed_or_process(self, job: Job, heartbeat: asyncio.Task[None]) -> None:
        """Backpressure (docs/architecture.md): a message over a quota, or one that waited in the queue longer than
        queue.max_age_seconds before any worker took it up, gets a short canned reply instead of the model's answer.
        The reply is checkpointed like an answer and sent by process(), so it goes out exactly once and in the chat's
        order; it is not remembered in the conversation. A message dropped over a quota (the user was told once
        already) just leaves the queue."""
        reason = self._shed_reason(job)
        if reason is None:
            await self.process(job, heartbeat)
            return
        msg = job.message
        if reason == SHED_QUOTA_SILENT:
            await self._write("complete", job, lambda: self.store.complete(job.id, job.lease_token))
            ANSWERS.labels(connector=msg.connector, outcome="dropped").inc()
            return
        if reason == BUSY:
            SHED.labels(reason="too_old").inc()
            log.warning("%s waited %.0f s in the queue: too busy to answer it", msg.event_id, _waited(job))
        reply = self.settings.queue.busy_reply if reason == BUSY else self.settings.quotas.reply
        turns = self.settings.memory.turns
        save = partial(self.store.save_answer, job.id, job.lease_token, reply, reason, msg.conversation_key, [], turns)
        await self._write("save_answer", job, save)
        await self.process(replace(job, answer=reply, outcome=reason), heartbeat)

    def _shed_reason(self, job: Job) -> str | None:
        if job.answer is not None:  # checkpointed already (an answer or a canned reply): deliver what it is
            return None
        if job.shed is not None:
            return job.shed
        max_age = self.settings.queue.max_age_seconds
        # Only a message no worker has started yet: one waiting for the engine or handed back at a shutdown has its
        # own deadline (worker.answer_deadline_seconds).
        if max_age and job.claims == 1 and _waited(job) > max_age:
            return BUSY
        return None

    async def _heartbeat(self, job: Job) -> None:
        """Renews the lease while the job is worked on; ends (and so flags the loss) if another worker took it over,
        or if the store could not be reached for so long that the lease has run out."""
        lease = self.settings.worker.lease_seconds
        held_until = time.monotonic() + lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                renewed = await self.store.extend(job.id, job.lease_token, lease)
            except Exception as exc:
                log.warning("could not renew the lease on %s (%s: %s)", job.id, type(exc).__name__, exc)
                if time.monotonic() < held_until:
                    continue
                renewed = False
            if not renewed:
                log.warning("lost the lease on %s; another worker has it", job.id)
                return
            held_until = time.monotonic() + lease

    async def process(self, job: Job, heartbeat: asyncio.Task[None] | None = None) -> None:
        msg = job.message
        if job.attempts > self.settings.worker.max_attempts:  # earlier claims crashed or failed unexpectedly
            await self._give_up(job, f"gave up after {job.attempts - 1} attempts")
            return
        answer, outcome = job.answer, job.outcome
        progress = self._progress(job)
        if answer is None:
            try:
                answer, outcome, turns = await self._respond(job, progress)
            except EngineUnavailable as exc:
                delay = self._engine_wait(job, exc)
                if delay is not None:
                    ENGINE_WAITS.labels(engine=self.settings.engine.name).inc()
                    log.warning("no answer yet for %s (%s); trying again in %.1f s", msg.event_id, exc, delay)
                    wait = partial(self.store.release, job.id, job.lease_token, delay, str(exc), count_attempt=False)
                    await self._write("release", job, wait)
                    return
                log.warning("no answer for %s by its deadline: %s", msg.event_id, exc)
                answer, outcome, turns = self.settings.engine.error_reply, "engine_error", []
            # /reset keeps no turns: the memory is cleared in the same fenced write that checkpoints its reply.
            keep = 0 if outcome == RESET_OUTCOME else self.settings.memory.turns
            checkpoint = (answer, outcome or "answered", self._memory_key(msg), turns, keep)
            await self._write("save_answer", job, lambda: self.store.save_answer(job.id, job.lease_token, *checkpoint))
        plan = self._delivery_plan(msg, answer, progress.ref if progress else None)
        for index in range(job.parts_sent, len(plan)):
            if heartbeat is not None and heartbeat.done():
                return  # our lease is gone: the worker that holds it now sends the rest
            channel, part = plan[index]
            try:
                await channel.deliver(part)
            except DeliveryUncertain as exc:
                # It may have been posted and the platform has no idempotency key: sending it again could show the
                # user a second copy, so it counts as sent (at most one copy; docs/connectors.md, ADR 0003).
                log.warning("delivery %d/%d of %s unconfirmed (%s); not sent again", index + 1, len(plan), job.id, exc)
            except DeliveryFailed as exc:
                if job.attempts >= self.settings.worker.max_attempts:
                    await self._give_up(job, f"delivery {index + 1}/{len(plan)}: {exc}")
                    return
                ceiling = self.settings.worker.retry_backoff_seconds * 2 ** (job.attempts - 1)
                # Never sooner than the platform's Retry-After (a 429 or 503 that named one).
                delay = max(random.uniform(ceiling / 2, ceiling), exc.retry_after or 0.0)  # noqa: S311 (jitter)
                log.warning(
                    "delivery %d/%d of %s failed (%s); retrying in %.1f s", index + 1, len(plan), job.id, exc, delay
                )
                await self._write("release", job, partial(self.store.release, job.id, job.lease_token, delay, str(exc)))
                return
            await self._write(
                "mark_part_sent", job, partial(self.store.mark_part_sent, job.id, job.lease_token, index + 1)
            )
        parts = [p for c, p in plan if c is self.channel]
        await self._write("complete", job, lambda: self.store.complete(job.id, job.lease_token))
        label = "answered" if outcome in (None, RESET_OUTCOME) else outcome  # a command's reply is an answer too
        ANSWERS.labels(connector=msg.connector, outcome=label).inc()
        ANSWER_DURATION.labels(connector=msg.connector).observe(max(0.0, time.time() - msg.received_at))
        log.info("answered %s in %d part(s), outcome %s", msg.event_id, len(parts), outcome)

    async def _give_up(self, job: Job, error: str) -> None:
        msg = job.message
        await self._write("dead_letter", job, lambda: self.store.dead_letter(job.id, job.lease_token, error))
        ANSWERS.labels(connector=msg.connector, outcome="dead").inc()
        log.error("job %s dead-lettered after %d attempt(s): %s", job.id, job.attempts, error)
        await self._tell_failed(msg)

    async def _fit(
        self, system: str, history: list[ChatTurn], documents: list[str], question: str
    ) -> tuple[list[ChatTurn], list[str]] | TooLong:
        """Fit the prompt into engine.context_tokens with engine.max_tokens left for the answer: drop the oldest
        exchanges of the memory first, then the weakest documents; the system prompt and the question always stay.
        If those two alone do not fit, the question is too long (TooLong), and the user is told so plainly."""
        engine = self.settings.engine
        budget = engine.context_tokens - engine.max_tokens
        counts = await _count_tokens(self.engine, [system, question, *(t.content for t in history), *documents])
        fixed = counts[0] + 2 * PER_TURN_TOKENS + WRAPPER_TOKENS
        if fixed + counts[1] > budget:
            return TooLong(tokens=counts[1], limit=max(0, budget - fixed))
        turn_costs = [c + PER_TURN_TOKENS for c in counts[2 : 2 + len(history)]]
        doc_costs = counts[2 + len(history) :]
        total = fixed + counts[1] + sum(turn_costs) + sum(doc_costs)
        dropped_turns = 0
        while total > budget and dropped_turns < len(history):
            step = 2 if len(history) - dropped_turns >= 2 else 1  # whole exchanges: a question with its answer
            total -= sum(turn_costs[dropped_turns : dropped_turns + step])
            dropped_turns += step
        kept_docs = len(documents)
        while total > budget and kept_docs:
            kept_docs -= 1
            total -= doc_costs[kept_docs]
        if dropped_turns or kept_docs < len(documents):
            log.info(
                "prompt trimmed to %d tokens: %d memory turn(s) and %d document(s) left out",
                total, dropped_turns, len(documents) - kept_docs,
            )  # fmt: skip
        return history[dropped_turns:], documents[:kept_docs]

    async def _tell_failed(self, msg: InboundMessage) -> None:
        """One message to the user that their answer failed, sent once, right after the dead letter is recorded (a
        crash in between means no notice rather than two). Best effort: if the platform is what failed, this fails
        too, and the dead letter (ai-assistant dlq) is where the message waits for an operator."""
        notice = OutboundText(
            msg.connector, msg.chat_id, self.settings.worker.dead_letter_reply, 1, 1, f"{msg.event_id}:failed",
            in_reply_to=msg,
        )  # fmt: skip
        try:
            await self.channel.deliver(notice)
        except Exception as exc:
            log.warning("could not tell the user that %s failed (%s: %s)", msg.event_id, type(exc).__name__, exc)

    async def _write(self, op: str, job: Job, write: Callable[[], Awaitable[bool]]) -> None:
        """One fenced write of the job, retried through a store outage (a Redis restart) for up to one lease: a part
        the platform already has must be recorded, or the next claim sends it again. Retrying is safe: the fence
        refuses the write once another worker holds the job, and the writes are idempotent for their holder
        (save_answer appends to the memory only with the first checkpoint). A write that may have landed before
        the store went away and is refused when retried (`complete`, `dead_letter` remove the job) did land."""
        uncertain = False
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                held = await write()
                break
            except Exception as exc:
                if time.monotonic() - started > self.settings.worker.lease_seconds:
                    raise
                uncertain = True
                log.warning("%s of %s failed (%s: %s); retrying in %.1f s", op, job.id, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2) * random.uniform(0.75, 1.0)  # noqa: S311 (jitter, not a secret)
        if not held and uncertain and op in ("complete", "dead_letter"):
            log.info("%s of %s had landed before the store went away", op, job.id)
            return
        self._held(op, job, held)

    @staticmethod
    def _held(op: str, job: Job, held: bool) -> None:
        """A fenced store write was refused: this worker's lease has passed to another one, so it must stop here."""
        if not held:
            STALE_WRITES.labels(op=op).inc()
            raise LeaseLost(f"{op} of {job.id} refused: its lease has passed to another worker; stopping")

    def _engine_wait(self, job: Job, exc: EngineUnavailable) -> float | None:
        """How long to put the message back for while the engine is unavailable, or None once waiting is over: the
        failure is permanent, or the message's answer deadline has passed (then the user gets the error reply).

        The delay grows with the message's age (a quarter of it, jittered, at least worker.retry_backoff_seconds,
        at most a minute), so retries come quickly after a blip and sparsely through a long outage; it honours the
        server's Retry-After and ends at the deadline, where one last try decides."""
        worker = self.settings.worker
        now = time.time()
        received = job.message.received_at or job.enqueued_at
        deadline = received + worker.answer_deadline_seconds
        if not exc.transient or now >= deadline:
            return None
        grown = min(MAX_ENGINE_WAIT_SECONDS, max(worker.retry_backoff_seconds, (now - received) / 4))
        delay = max(random.uniform(grown / 2, grown), exc.retry_after or 0.0)  # noqa: S311 (jitter, not a secret)
        return min(delay, deadline - now)

    def _delivery_plan(
        self, msg: InboundMessage, answer: str, reply_ref: str | None = None
    ) -> list[tuple[OutputChannel, OutboundText]]:
        """Every delivery this answer needs, in a fixed order, so `parts_sent` can say how far a previous attempt got:
        the reply's parts first, then one copy per routed channel that wants this connector's answers. With a
        progressive reply already posted (`reply_ref`), the first part edits that message instead of posting."""
        connector = self.connectors.get(msg.connector)
        pieces = connector.split(answer) if connector else [answer]
        plan: list[tuple[OutputChannel, OutboundText]] = [
            (
                self.channel,
                OutboundText(
                    msg.connector, msg.chat_id, text, i, len(pieces), f"{msg.event_id}:{i}", in_reply_to=msg,
                    extra={"edit": reply_ref} if reply_ref and i == 1 else {},
                ),
            )
            for i, text in enumerate(pieces, start=1)
        ]  # fmt: skip
        for routed in self.routed:
            if routed.wants(msg.connector):
                key = f"{msg.event_id}:{routed.channel.name}"
                part = OutboundText(msg.connector, msg.chat_id, answer, 1, 1, key, in_reply_to=msg)
                # One plan entry per piece (a copy to another connector may need several), each checkpointed.
                plan.extend(routed.deliveries(part))
        return plan

    async def _respond(self, job: Job, progress: Progress | None) -> tuple[str, str, list[ChatTurn]]:
        """The workflow whose trigger matches (or whose run this job resumes) answers; with none, the default answer
        below, as when no workflow is defined (workflows/runner.py)."""
        if self.workflows is not None:
            ran = await self.workflows.answer(job, lambda op, write: self._write(op, job, write))
            if ran is not None:
                return ran
        return await self._answer(job.message, progress)

    async def _with_media(self, msg: InboundMessage) -> InboundMessage:
        """The message with each platform file (an image, a voice message) downloaded by its connector, for the input
        adapters; one that cannot be fetched becomes a note in the text, so the user hears why it was not read."""
        connector = self.connectors.get(msg.connector)
        if connector is None or not any(a.ref and a.data_b64 is None for a in msg.attachments):
            return msg
        kept: list[Attachment] = []
        notes: list[str] = []
        for attachment in msg.attachments:
            if not attachment.ref or attachment.data_b64 is not None:
                kept.append(attachment)
                continue
            try:
                data, mime = await connector.fetch_media(msg, attachment)
            except MediaUnavailable as exc:
                log.warning("%s of %s not read: %s", attachment.kind, msg.event_id, exc)
                notes.append(note(describe(attachment), str(exc)))
                continue
            encoded = base64.b64encode(data).decode("ascii")
            kept.append(attachment.model_copy(update={"data_b64": encoded, "mime_type": mime}))
        text = "\n".join(t for t in (msg.text, *notes) if t)
        return msg.model_copy(update={"attachments": kept, "text": text})

    def _progress(self, job: Job) -> Progress | None:
        """A progressive reply for this job, where its connector can edit messages and nothing was delivered yet."""
        connector = self.connectors.get(job.message.connector)
        if connector is None or not connector.editable or not connector.config.progressive_replies:
            return None
        if job.parts_sent or (job.answer is not None and job.reply_ref is None):
            return None

        async def save_ref(ref: str) -> None:
            await self._write("save_reply_ref", job, partial(self.store.save_reply_ref, job.id, job.lease_token, ref))

        return Progress(connector, job.message, job.reply_ref, save_ref, self.output_filter)

    async def _answer(self, msg: InboundMessage, progress: Progress | None = None) -> tuple[str, str, list[ChatTurn]]:
        """The answer text, its outcome label and the turns to remember. With `progress`, the model's words are shown
        to the user while they are written (pipeline/progressive.py)."""
        text = await message_text(await self._with_media(msg), self.adapters)
        checked = self.input_filter.apply(text)
        if checked.blocked:
            return self.settings.filters.block_message, "blocked", []
        user_text = checked.text
        command = self.commands.handle(user_text)
        if command is not None:
            return command.reply, command.outcome, []
        mode, _, note = self._conversation(msg)
        system = self.settings.engine.system_prompt
        documents: tuple[str, ...] = ()
        footer = ""
        general = False  # a knowledge_first answer that no document backs: marked as such below
        if self.retriever is not None and mode != "general":
            grounding = await self.retriever(msg, user_text)
            if grounding.no_hit_answer is not None:
                if mode == "knowledge_only":
                    return grounding.no_hit_answer, "answered", []
                general = True
                system = f"{system}\n\n{GENERAL_PROMPT}"
            else:
                system = f"{system}\n\n{grounding.system}" if grounding.system else system
                documents, footer = grounding.documents, grounding.footer
        history = await self.store.history(self._memory_key(msg), self.settings.memory.turns)
        fitted = await self._fit(system, history, list(documents), user_text)
        if isinstance(fitted, TooLong):
            reply = self.settings.engine.too_long_reply.format(tokens=fitted.tokens, limit=fitted.limit)
            return reply, "too_long", []
        history, kept = fitted
        question = "<documents>\n" + "\n".join(kept) + f"\n</documents>\n\n{user_text}" if kept else user_text
        turns = [ChatTurn("system", system), *history, ChatTurn("user", question)]
        chat = self.engine.chat  # type: ignore[attr-defined]  # EngineUnavailable: see process()
        if progress is not None and getattr(self.engine, "streams", False):
            chat = partial(chat, on_text=progress.update)
        if self.answer_cache is not None:  # pipeline/answer_cache.py: the engine is asked only on a miss
            chat = self.answer_cache.around(chat, msg, user_text, context=[system, *kept], personal=bool(history))
        raw = await chat(turns)
        if progress is not None and progress.error is not None:  # the lease was lost while the message was posted
            raise progress.error
        # The filter sees exactly what goes out, sources footer included (a document title is text from anyone);
        # the memory keeps the model's own words, filtered the same way.
        checked_out = self.output_filter.apply(raw + (f"\n\n{footer}" if footer else ""))
        checked_own = self.output_filter.apply(raw) if footer else checked_out
        if checked_out.blocked or checked_own.blocked:
            return self.settings.filters.block_message, "blocked", []
        answer = general_answer(checked_out.text, user_text, note) if general else checked_out.text
        return answer, "answered", [ChatTurn("user", user_text), ChatTurn("assistant", checked_own.text)]

    def _conversation(self, msg: InboundMessage) -> tuple[AnswerMode, MemoryScope, str | None]:
        """The connector's (or the chat's override of) answer mode, memory scope and general-answer line; a message
        from a connector that is not configured here (a test, a replayed dead letter) gets the defaults."""
        connector = self.connectors.get(msg.connector)
        if connector is None:
            return "knowledge_first", "user", None
        config = connector.config
        return config.answer_mode_for(msg.chat_id), config.memory_scope_for(msg.chat_id), config.general_answer_note

    def _memory_key(self, msg: InboundMessage) -> str:
        return msg.memory_key(self._conversation(msg)[1])


@dataclass(frozen=True)
class TooLong:
    tokens: int  # the question's
    limit: int  # what the question may take at most, with the system prompt and the answer's room set aside


# Chat templates wrap every turn in a few marker tokens; the <documents> wrapper costs a few more.
PER_TURN_TOKENS = 8
WRAPPER_TOKENS = 12


async def _count_tokens(engine: object, texts: list[str]) -> list[int]:
    counter = getattr(engine, "count_tokens", None)
    if counter is not None:
        try:
            counts = await counter(texts)
            if len(counts) == len(texts):
                return [int(c) for c in counts]
        except Exception:  # counting is an optimisation of the prompt; never a reason to fail the message
            log.debug("token count failed; estimating", exc_info=True)
    return [estimate_tokens(t) for t in texts]


async def export_queue_stats(store: StateStore, stop: asyncio.Event, every: float = 2.0) -> None:
    """Keeps the queue gauges fresh for /metrics; errors here must never stop the service."""
    while not stop.is_set():
        try:
            stats = await store.stats()
            QUEUE_DEPTH.set(stats.depth)
            QUEUE_OLDEST_AGE.set(stats.oldest_age_seconds)
            DEAD_LETTERS.set(await store.dead_letter_count())
            for lane, lane_stats in (await store.lane_stats()).items():
                LANE_DEPTH.labels(lane=lane).set(lane_stats.depth)
        except Exception:  # the store being down shows in /readyz; the gauges just keep their last value
            log.debug("queue stats unavailable", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
