"""The runner and its nodes in process, on the real stores (SQLite, and Redis for the checkpoint contract) and a
real HTTP business-system stand-in on 127.0.0.1: SSRF refusals, timeouts, size limits, garbage, error edges, the
Idempotency-Key, fenced checkpoints and resuming after the last checkpointed node."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.messages import InboundMessage
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.store.base import Job, StateStore
from ai_assistant.workflows.nodes import Services
from ai_assistant.workflows.nodes.http import idempotency_key
from ai_assistant.workflows.runner import WorkflowRunner
from ai_assistant.workflows.schema import parse
from tests.workflows.standin import BusinessSystem

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[StateStore]:
    from ai_assistant.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "state.sqlite3")
    yield s
    await s.close()


@pytest.fixture
def erp() -> Iterator[BusinessSystem]:
    system = BusinessSystem()
    yield system
    system.close()


def flow(base: str, path: str = "/orders/{{ message.text.split()[-1] }}", **http: Any) -> dict[str, Any]:
    host = base.split("//")[1].split(":")[0]
    return {
        "id": "orders",
        "version": 1,
        "settings": {"http": {"allow_hosts": [host], "allow_private": True, "max_response_bytes": 4096} | http},
        "nodes": [
            {"id": "start", "kind": "trigger", "keywords": ["order"]},
            {"id": "erp", "kind": "http", "url": base + path, "map": {"status": "{{ response.json.status }}"}},
            {"id": "answer", "kind": "reply", "text": "Order is {{ vars.status }}."},
            {"id": "down", "kind": "reply", "text": "ERP down: {{ nodes.erp.error }}"},
        ],
        "edges": [
            {"from": "start", "to": "erp"},
            {"from": "erp", "to": "answer"},
            {"from": "erp", "to": "down", "when": "error"},
        ],
    }


def runner(store: StateStore, *docs: dict[str, Any]) -> WorkflowRunner:
    words = SensitiveWordFilter.from_file(None, "mask")
    return WorkflowRunner([parse(d, "f.yaml", {}) for d in docs], store, Services(), words, words, "blocked")


async def claimed(store: StateStore, text: str) -> Job:
    message = InboundMessage(connector="im", event_id=uuid.uuid4().hex, chat_id="c1", user_id="u1", text=text,
                             received_at=time.time())  # fmt: skip
    assert await store.enqueue(message, 60)
    job = await store.claim(30)
    assert job is not None
    return job


def fenced(store: StateStore, job: Job) -> Callable[[str, Callable[[], Awaitable[bool]]], Awaitable[None]]:
    async def write(op: str, do: Callable[[], Awaitable[bool]]) -> None:
        assert await do(), f"{op} refused"

    return write


async def run(store: StateStore, doc: dict[str, Any], text: str) -> tuple[Job, tuple[str, str, Any] | None]:
    job = await claimed(store, text)
    return job, await runner(store, doc).answer(job, fenced(store, job))


async def steps(store: StateStore, job: Job) -> list[dict[str, Any]]:
    return [json.loads(r) for r in await store.workflow_steps(job.id)]


async def test_http_node_maps_the_response_and_sends_an_idempotency_key(store: StateStore, erp: BusinessSystem) -> None:
    job, ran = await run(store, flow(erp.base), "where is order 4711")
    assert ran is not None and ran[0] == "Order is shipped." and ran[1] == "answered"
    assert erp.calls["/orders/4711"] == 1
    assert erp.keys("/orders/4711") == [idempotency_key(job.message.event_id, "erp", 1)]
    trace = await store.workflow_trace(job.message.event_id)
    assert [json.loads(s)["node"] for s in trace] == ["start", "erp", "answer"]
    http_step = json.loads(trace[1])
    assert http_step["inputs"]["url"] == f"{erp.base}/orders/4711" and http_step["outputs"]["status"] == 200


async def test_no_matching_trigger_leaves_the_message_to_the_default_answer(
    sqlite: StateStore, erp: BusinessSystem
) -> None:
    job, ran = await run(sqlite, flow(erp.base), "hello there")
    assert ran is None and await steps(sqlite, job) == [] and not erp.calls


@pytest.mark.parametrize(
    ("path", "http", "error"),
    [
        ("/slow", {"timeout_seconds": 0.5}, "timed out after 0.5 s"),
        ("/big", {}, "response larger than 4096 bytes"),
        ("/garbage", {}, "response does not fit the mapping"),
        ("/redirect", {}, "HTTP 302"),
        ("/missing", {}, "HTTP 404"),
    ],
)
async def test_http_failures_take_the_error_edge(
    sqlite: StateStore, erp: BusinessSystem, path: str, http: dict[str, Any], error: str
) -> None:
    job, ran = await run(sqlite, flow(erp.base, path, **http), "order 1")
    assert ran is not None and ran[0].startswith("ERP down: ") and error in ran[0], ran
    assert [(s["node"], s["label"]) for s in await steps(sqlite, job)] == [
        ("start", "next"), ("erp", "error"), ("down", "next")
    ]  # fmt: skip


async def test_private_addresses_are_refused_unless_the_workflow_allows_them(
    sqlite: StateStore, erp: BusinessSystem
) -> None:
    doc = flow(erp.base.replace("127.0.0.1", "localhost"), allow_hosts=["localhost"], allow_private=False)
    _, ran = await run(sqlite, doc, "order 1")
    assert ran is not None and "resolves to non-public address" in ran[0], ran
    assert not erp.calls, "the refused call never left"


async def test_without_an_error_edge_the_user_gets_the_clear_error_reply(
    sqlite: StateStore, erp: BusinessSystem
) -> None:
    doc = flow(erp.base, "/garbage")
    doc["edges"] = doc["edges"][:2]
    doc["nodes"] = doc["nodes"][:3]
    _, ran = await run(sqlite, doc, "order 1")
    assert ran is not None and ran[1] == "workflow_error"
    assert ran[0] == parse(doc, "f.yaml", {}).settings.error_reply


async def test_a_loop_that_does_not_end_stops_at_max_steps(sqlite: StateStore, erp: BusinessSystem) -> None:
    doc = flow(erp.base, "/missing")
    doc["settings"]["max_steps"] = 5
    doc["nodes"][3] = {"id": "down", "kind": "set", "values": {"n": "again"}}
    doc["nodes"].append({"id": "give-up", "kind": "reply", "text": "never"})
    doc["edges"] += [{"from": "down", "to": "erp"}, {"from": "answer", "to": "give-up"}]
    job, ran = await run(sqlite, doc, "order 1")
    assert ran is not None and ran[1] == "workflow_error"
    assert len(await steps(sqlite, job)) == 5 and erp.calls["/missing"] == 2


class Crash(Exception):
    pass


async def test_a_resumed_run_starts_after_the_last_checkpoint_and_never_repeats_the_http_call(
    store: StateStore, erp: BusinessSystem
) -> None:
    doc = flow(erp.base)
    job = await claimed(store, "order 99")

    async def crash_after_erp(op: str, do: Callable[[], Awaitable[bool]]) -> None:
        assert await do()
        if len(await store.workflow_steps(job.id)) == 2:  # the HTTP node's result is checkpointed: die here
            raise Crash

    with pytest.raises(Crash):
        await runner(store, doc).answer(job, crash_after_erp)
    assert erp.calls["/orders/99"] == 1
    assert await store.release(job.id, job.lease_token, 0, "crashed")
    again = await store.claim(30)
    assert again is not None and again.id == job.id
    ran = await runner(store, doc).answer(again, fenced(store, again))
    assert ran is not None and ran[0] == "Order is shipped."
    assert erp.calls["/orders/99"] == 1, "the checkpointed HTTP call was not repeated"
    assert [s["step"] for s in await steps(store, again)] == [0, 1, 2]


async def test_checkpoints_are_fenced_and_a_retried_write_changes_nothing(store: StateStore) -> None:
    job = await claimed(store, "order 1")
    record = json.dumps({"step": 0, "started": 1.0})
    assert await store.save_workflow_step(job.id, job.lease_token, job.message.event_id, 0, record)
    assert await store.save_workflow_step(job.id, job.lease_token, job.message.event_id, 0, '{"other": 1}')
    assert await store.workflow_steps(job.id) == [record]
    assert not await store.save_workflow_step(job.id, "stale-token", job.message.event_id, 1, record)
    assert await store.release(job.id, job.lease_token, 0, "x")
    taken = await store.claim(30)
    assert taken is not None
    assert not await store.save_workflow_step(job.id, job.lease_token, job.message.event_id, 1, record), "old lease"
    assert await store.complete(taken.id, taken.lease_token)
    assert await store.workflow_trace(job.message.event_id) == [record], "the trace outlives the finished job"
    assert await store.workflow_trace("no-such-event") == []


async def test_an_engine_outage_at_the_llm_node_resumes_there_without_repeating_the_http_call(
    sqlite: StateStore, erp: BusinessSystem, tmp_path: Path
) -> None:
    """The model server (the fault tests' stand-in process, a real OpenAI-compatible server) fails its first request:
    the LLM node raises EngineUnavailable for the pipeline to wait on, and the next claim resumes at that node."""
    from ai_assistant.engines.hf_inference import HFInferenceEngine
    from ai_assistant.errors import EngineUnavailable
    from ai_assistant.settings import EngineSettings
    from tests.faults.engine_standin import ANSWER
    from tests.faults.procs import EngineStandin

    model = EngineStandin(tmp_path).start("--fail", "1", "--status", "503")
    try:
        engine = HFInferenceEngine(EngineSettings(base_url=model.base_url, max_retries=0, timeout_seconds=30))
        doc = flow(erp.base)
        doc["nodes"].append({"id": "line", "kind": "llm", "prompt": "Say that the order is {{ vars.status }}."})
        doc["nodes"][2]["text"] = "{{ vars.status }}: {{ nodes.line.text }}"
        doc["edges"] = [
            {"from": "start", "to": "erp"},
            {"from": "erp", "to": "line"},
            {"from": "erp", "to": "down", "when": "error"},
            {"from": "line", "to": "answer"},
        ]
        words = SensitiveWordFilter.from_file(None, "mask")
        wf = WorkflowRunner([parse(doc, "f.yaml", {})], sqlite, Services(engine=engine), words, words, "blocked")
        job = await claimed(sqlite, "order 5")
        with pytest.raises(EngineUnavailable):
            await wf.answer(job, fenced(sqlite, job))
        assert [s["node"] for s in await steps(sqlite, job)] == ["start", "erp"]
        assert await sqlite.release(job.id, job.lease_token, 0, "engine unavailable", count_attempt=False)
        again = await sqlite.claim(30)
        assert again is not None
        ran = await wf.answer(again, fenced(sqlite, again))
        assert ran is not None and ran[0] == f"shipped: {ANSWER}", ran
        assert erp.calls["/orders/5"] == 1 and len(model.requests()) == 2
        assert [s["node"] for s in await steps(sqlite, again)] == ["start", "erp", "line", "answer"]
    finally:
        model.kill()
