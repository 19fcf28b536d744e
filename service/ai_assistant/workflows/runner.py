"""Runs a workflow for a queued message, durably.

Each finished node is checkpointed in the store against the job (a fenced write, like every job write: a worker that
lost its lease cannot record a step), with the run's state after it. A run that crashed, or waited for the engine,
resumes after its last checkpointed node: a node whose result was recorded is never run again, so an HTTP call made
before the crash is not repeated; one cut off before its result was recorded is repeated with the same
Idempotency-Key (nodes/http.py). The same records are the run's trace (`ai-assistant workflow trace`, /admin/api/
workflows/traces/...). The answer the run produces then goes through the pipeline's usual checkpoint and delivery."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from jinja2 import TemplateError

from ..messages import ChatTurn, InboundMessage
from ..pipeline.adapters import InputAdapter, message_text
from ..pipeline.filters import SensitiveWordFilter
from ..store import Job, StateStore
from .errors import NodeFailed
from .nodes import Outcome, RunContext, Services
from .schema import Workflow

log = logging.getLogger(__name__)

# The pipeline's fenced write with retries (Pipeline._write): (operation name, the write) -> None, or LeaseLost.
FencedWrite = Callable[[str, Callable[[], Awaitable[bool]]], Awaitable[None]]

ANSWERED, FAILED = "answered", "workflow_error"


@dataclass
class Step:
    """One node's run, as checkpointed and traced."""

    workflow: str
    version: int
    step: int
    node: str
    kind: str
    label: str
    next: str | None
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    started: float
    finished: float
    vars: dict[str, Any] = field(default_factory=dict)  # the run's state after this node
    replies: list[str] = field(default_factory=list)
    failed: bool = False

    def dump(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, default=str)

    @classmethod
    def load(cls, record: str) -> Step:
        return cls(**json.loads(record))


@dataclass
class WorkflowRunner:
    flows: list[Workflow]
    store: StateStore
    services: Services
    input_filter: SensitiveWordFilter
    output_filter: SensitiveWordFilter
    block_message: str
    adapters: dict[str, InputAdapter] = field(default_factory=dict)

    def match(self, job: Job) -> Workflow | None:
        for flow in self.flows:
            if flow.enabled and flow.trigger.accepts(job.message):
                return flow
        return None

    async def answer(self, job: Job, write: FencedWrite) -> tuple[str, str, list[ChatTurn]] | None:
        """The answer of the workflow this message runs (or resumes), or None: no workflow's trigger matches, and
        the default answer applies."""
        steps = [Step.load(r) for r in await self.store.workflow_steps(job.id)]
        flow = self._resumed(steps) if steps else self.match(job)
        if flow is None:
            if steps:  # its workflow was removed since: the recorded steps are kept; the user gets a clear message
                log.error("workflow %s of %s is no longer loaded", steps[0].workflow, job.message.event_id)
                return self.flows[0].settings.error_reply if self.flows else "", FAILED, []
            return None
        checked = self.input_filter.apply(await message_text(job.message, self.adapters))
        if checked.blocked:
            return self.block_message, "blocked", []

        async def record(step: Step) -> None:
            save = partial(self.store.save_workflow_step, job.id, job.lease_token, job.message.event_id, step.step)
            await write("save_workflow_step", partial(save, step.dump()))

        replies, failed = await run_steps(flow, job.message, checked.text, steps, self.services, record)
        text, outcome = answer_text(flow, replies, failed)
        out = self.output_filter.apply(text)
        if out.blocked:
            return self.block_message, "blocked", []
        return out.text, outcome, [ChatTurn("user", checked.text), ChatTurn("assistant", out.text)]

    def _resumed(self, steps: list[Step]) -> Workflow | None:
        first = steps[0]
        for flow in self.flows:
            if flow.id == first.workflow and flow.version == first.version:
                return flow
        return None


def answer_text(flow: Workflow, replies: list[str], failed: bool) -> tuple[str, str]:
    """The run's replies as one answer, and its outcome; a failure, or a path with no reply, ends with error_reply."""
    if failed or not replies:
        return "\n\n".join([*replies, flow.settings.error_reply]), FAILED
    return "\n\n".join(replies), ANSWERED


async def run_steps(
    flow: Workflow,
    msg: InboundMessage,
    text: str,
    steps: list[Step],
    services: Services,
    record: Callable[[Step], Awaitable[None]],
) -> tuple[list[str], bool]:
    """Run from the trigger, or on from the last of `steps`, recording each finished node; (replies, failed)."""
    if steps:
        last = steps[-1]
        node_id, index, replies, failed = last.next, last.step + 1, list(last.replies), last.failed
        variables: dict[str, Any] = dict(last.vars)
        outputs = {s.node: dict(s.outputs) for s in steps}
        log.info("resuming workflow %s for %s after step %d (%s)", flow.id, msg.event_id, last.step, last.node)
    else:
        node_id, index, replies, failed, variables, outputs = flow.trigger.id, 0, [], False, {}, {}
    while node_id is not None:
        if index >= flow.settings.max_steps:
            log.error("workflow %s for %s stopped after %d steps", flow.id, msg.event_id, index)
            return replies, True
        node = flow.node(node_id)
        ctx = RunContext(msg, text, dict(variables), outputs, index, services, flow.settings)
        started = time.time()
        try:
            outcome = await node.run(ctx)
        except (NodeFailed, TemplateError) as exc:  # EngineUnavailable and store errors are the pipeline's
            outcome = Outcome(outputs={"error": f"{type(exc).__name__}: {exc}"}, label="error")
        variables.update(outcome.sets)
        outputs[node.id] = dict(outcome.outputs)
        if outcome.reply is not None:
            replies.append(outcome.reply)
        following = None if outcome.end else flow.next_node(node.id, outcome.label)
        if outcome.label == "error" and following is None:
            failed = True
            log.warning("workflow %s node %s failed for %s: %s", flow.id, node.id, msg.event_id,
                        outcome.outputs.get("error"))  # fmt: skip
        step = Step(
            flow.id, flow.version, index, node.id, node.kind, outcome.label, following,
            dict(outcome.inputs), dict(outcome.outputs), started, time.time(), dict(variables), list(replies), failed,
        )  # fmt: skip
        await record(step)
        node_id, index = following, index + 1
    return replies, failed


async def dry_run(flow: Workflow, msg: InboundMessage, services: Services) -> tuple[str, str, list[Step]]:
    """Run a workflow against a sample message without recording anything and without side effects: the editor's
    dry run. Knowledge and the model are used; only GET requests are sent; other HTTP requests and hand-offs are
    shown, not made (nodes/http.py, nodes/handoff.py). No filters, no memory: what each node does, nothing more."""
    steps: list[Step] = []

    async def record(step: Step) -> None:
        steps.append(step)

    dry = Services(engine=services.engine, retriever=services.retriever, channel=None, dry_run=True)
    replies, failed = await run_steps(flow, msg, msg.text, [], dry, record)
    text, outcome = answer_text(flow, replies, failed)
    return text, outcome, steps
