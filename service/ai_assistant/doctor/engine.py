"""The engine (reachable, then a short generation) and the knowledge store."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx

from ..engines.base import engine_tls, tls_problem
from ..knowledge.stores.weaviate import CA_KEY as WEAVIATE_CA_KEY
from ..settings import EngineSettings, Settings
from ..trust import ca_context, untrusted
from .clock import Clocks
from .report import Check, Status, one_line
from .state import read_sqlite

PROBE_PROMPT = "Reply with the single word: ready"
PROBE_MAX_TOKENS = 16


async def engine_check(engine: EngineSettings, clocks: Clocks) -> Check:
    """`engine` as the service builds it (engines.base.engine_settings: ca_file resolved), so the doctor verifies the
    server's certificate exactly as the service does."""
    name = "engine"
    if engine.name != "hf_inference":
        return Check(name, Status.SKIP, f"engine {engine.name} is a plugin: the doctor speaks only the OpenAI API")
    url = engine.base_url.rstrip("/")
    probe = url + "/models" if url.endswith("/v1") else url + "/health"
    headers = {"Authorization": f"Bearer {engine.api_key.get_secret_value()}"} if engine.api_key else {}
    what = f"{engine.name} at {engine.base_url}"
    context = engine_tls(engine)
    async with clocks.client("engine", **({"verify": context} if context is not None else {})) as client:
        started = time.perf_counter()
        try:
            resp = await client.get(probe, headers=headers)
        except httpx.HTTPError as exc:
            problem = tls_problem(exc, engine)
            if problem is not None:
                advice = "engine.ca_file must name the CA that signed the model server's certificate"
                return Check(name, Status.FAIL, problem, advice, "engine")
            advice = "start the model server (or `ai-assistant up`), or fix engine.base_url"
            return Check(name, Status.FAIL, f"{what} is unreachable: {one_line(exc)}", advice, "engine")
    ms = (time.perf_counter() - started) * 1000
    if resp.status_code >= 400:
        advice = "401/403: engine.api_key is wrong; other codes: the engine's own log"
        summary = f"{what} answered HTTP {resp.status_code}: {one_line(resp.text[:200])}"
        return Check(name, Status.FAIL, summary, advice, "engine")
    return Check(name, Status.PASS, f"{what} answers in {ms:.0f} ms", details={"latency_ms": round(ms, 1)})


async def engine_probe(engine: EngineSettings) -> Check:
    """A short generation through the same client the service uses: time to first token and tokens per second."""
    from ..engines.hf_inference import inference_client

    name = "engine probe"
    started = time.perf_counter()
    first: float | None = None
    pieces = 0  # OpenAI-compatible servers stream one token per chunk
    try:
        async with inference_client(engine) as client:
            stream = await client.chat_completion(
                messages=[{"role": "user", "content": PROBE_PROMPT}],
                model=engine.model,
                max_tokens=PROBE_MAX_TOKENS,
                temperature=0.0,
                stream=True,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    first = first or time.perf_counter()
    except Exception as exc:  # the client raises its own hierarchy (httpx2's); any of them fails the probe
        problem = tls_problem(exc, engine)
        if problem is not None:
            advice = "engine.ca_file must name the CA that signed the model server's certificate"
            return Check(name, Status.FAIL, problem, advice, "engine-probe")
        advice = "the engine answers but cannot generate: its log says why (model not loaded, out of memory)"
        return Check(name, Status.FAIL, f"generation failed: {one_line(exc)}", advice, "engine-probe")
    ended = time.perf_counter()
    if first is None:
        advice = "check engine.model names a model the server has"
        return Check(name, Status.FAIL, "the engine answered with no tokens", advice, "engine-probe")
    ttft = first - started
    rate = (pieces - 1) / (ended - first) if pieces > 1 and ended > first else 0.0
    details = {"ttft_ms": round(ttft * 1000, 1), "tokens": pieces, "tokens_per_second": round(rate, 1)}
    summary = f"first token after {ttft * 1000:.0f} ms, {rate:.1f} tokens/s ({pieces} tokens)"
    return Check(name, Status.PASS, summary, details=details)


async def knowledge_check(settings: Settings, clocks: Clocks) -> Check:
    name = "knowledge store"
    kb = settings.knowledge
    if not kb.enabled:
        return Check(name, Status.SKIP, "knowledge.enabled is false")
    if kb.store.name == "embedded":
        path = settings.data_dir / "knowledge" / "knowledge.sqlite3"
        if not path.exists():
            advice = "add documents with `ai-assistant kb ingest PATH` (until then answers are not grounded)"
            return Check(name, Status.WARN, f"empty: no knowledge store at {path} yet", advice, "knowledge-store")
        try:
            latency, rows = await asyncio.to_thread(
                read_sqlite, path, ["SELECT COUNT(*) FROM documents", "SELECT COUNT(*) FROM chunks"]
            )
        except sqlite3.Error as exc:
            advice = "restore it from a backup or re-ingest (`ai-assistant kb`)"
            return Check(name, Status.FAIL, f"{path}: {exc}", advice, "knowledge-store")
        (documents,), (chunks,) = rows
        ms = latency * 1000
        summary = f"embedded at {path}: {documents} document(s), {chunks} chunk(s), read in {ms:.0f} ms"
        return Check(name, Status.PASS, summary, details={"latency_ms": round(ms, 1), "chunks": chunks})
    if kb.store.name == "weaviate" and kb.store.url:
        headers = {"Authorization": f"Bearer {kb.store.api_key.get_secret_value()}"} if kb.store.api_key else {}
        # Verified as the store verifies its REST channel: against knowledge.store.ca_file where one is set.
        ca = kb.store.ca_file
        verify = {"verify": ca_context(ca, WEAVIATE_CA_KEY)} if ca is not None else {}
        async with clocks.client("knowledge", **verify) as client:
            started = time.perf_counter()
            try:
                resp = await client.get(kb.store.url.rstrip("/") + "/v1/.well-known/ready", headers=headers)
            except httpx.HTTPError as exc:
                why = untrusted(exc, ca)
                if why is not None:
                    advice = f"{WEAVIATE_CA_KEY} must name the CA that signed the data host's link certificate"
                    summary = f"Weaviate at {kb.store.url}: {why}"
                    return Check(name, Status.FAIL, summary, advice, "knowledge-store")
                summary = f"Weaviate at {kb.store.url} is unreachable: {one_line(exc)}"
                return Check(name, Status.FAIL, summary, "see docs/runbooks/knowledge.md", "knowledge-store")
        ms = (time.perf_counter() - started) * 1000
        if resp.status_code >= 300:
            summary = f"Weaviate at {kb.store.url} is not ready (HTTP {resp.status_code})"
            return Check(name, Status.FAIL, summary, "see docs/runbooks/knowledge.md", "knowledge-store")
        summary = f"Weaviate at {kb.store.url} ready in {ms:.0f} ms"
        return Check(name, Status.PASS, summary, details={"latency_ms": round(ms, 1)})
    return Check(name, Status.SKIP, f"store {kb.store.name} is a plugin: not checked")
