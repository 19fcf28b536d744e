"""Production engine: a Hugging Face text-generation-inference server (or any OpenAI-compatible server: vLLM, SGLang,
llama.cpp) through `huggingface_hub.AsyncInferenceClient.chat_completion`. The embedded default uses this very code
against the local llama.cpp server, so the production path is the tested path."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
from huggingface_hub import AsyncInferenceClient, set_async_client_factory
from huggingface_hub.utils._http import async_hf_request_event_hook, async_hf_response_event_hook
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..errors import EngineUnavailable
from ..messages import ChatTurn
from ..observability import ENGINE_ATTEMPTS, ENGINE_DURATION, ENGINE_ERRORS
from ..settings import EngineSettings
from ..trust import refused_certificate
from .base import OnText, engine_tls, estimate_tokens, tls_problem

log = logging.getLogger(__name__)

# The longest Retry-After honoured inside one call; a server asking for more gets the job released for that long
# instead (pipeline/worker.py), so a worker is not parked on one message while others wait.
MAX_WAIT_IN_CALL = 8.0


@dataclass(frozen=True)
class Verdict:
    """How a failed attempt should be treated: worth another try, and not before `after` seconds."""

    retry: bool
    after: float | None = None


def _status(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def retry_after(exc: BaseException) -> float | None:
    """Seconds from the response's Retry-After header (delta-seconds or an HTTP date), if it has one."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> Verdict:
    """Decide by what happened, not by which HTTP library raised it (huggingface_hub 2.x uses its own httpx fork,
    whose exceptions are not httpx's): a server that answered with 429 or 5xx (or 408) is worth another try, as is a
    request that never got an answer (refused, reset, timed out, cut off mid-stream); any other status is a request
    the server will refuse again. A refused server certificate is a configuration problem (engine.ca_file), never an
    outage: a wrong CA stays wrong."""
    if refused_certificate(exc) is not None:
        return Verdict(False)
    for link in _chain(exc):
        status = _status(link)
        if status is not None:
            return Verdict(status in (408, 429) or status >= 500, retry_after(link))
        if isinstance(link, TimeoutError | ConnectionError | OSError):
            return Verdict(True)
        # An HTTP library's request error (httpx, httpx2, ...) carries the request it was about and no response.
        request = None
        try:
            request = getattr(link, "request", None)
        except RuntimeError:  # httpx raises this for a request error that was never bound to a request
            request = None
        if request is not None:
            return Verdict(True)
    return Verdict(False)


def _retryable_now(exc: BaseException) -> bool:
    verdict = classify(exc)
    return verdict.retry and (verdict.after is None or verdict.after <= MAX_WAIT_IN_CALL)


class _WaitHonouringRetryAfter:
    """Jittered exponential backoff, but never shorter than what the server asked for."""

    def __init__(self) -> None:
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=MAX_WAIT_IN_CALL)

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = classify(exc).after if exc is not None else None
        return max(wait, asked or 0.0)


# Building an SSL context loads the system's whole CA bundle: ~10 ms of CPU, and httpx does it for every client it
# creates, even one that only ever speaks plain HTTP to a loopback engine. Two clients per answer (the token count and
# the chat call) made it ~75 % of the service's CPU per answer (bench/answer_bench.py, docs/benchmarks.md). One
# context per library per process instead, or one per engine.ca_file (trust.ca_context) when the engine names its CA;
# a changed CA bundle is read at the next restart.
@functools.cache
def _httpx_ssl() -> ssl.SSLContext:
    return httpx.create_ssl_context()


@functools.cache
def _httpx2_ssl() -> ssl.SSLContext:
    return httpx2.create_ssl_context()


def httpx_verify(engine: EngineSettings) -> ssl.SSLContext:
    """What an httpx client talking to the engine verifies with: the engine's CA, else certifi's bundle."""
    return engine_tls(engine) or _httpx_ssl()


# huggingface_hub builds AsyncInferenceClient's HTTP client through one process-wide factory, with no argument to say
# which engine it is for; the engine's context rides along in this variable, set around the client's use
# (`inference_client`), so two engines with different CAs in one process each verify with their own.
_HF_VERIFY: ContextVar[ssl.SSLContext | None] = ContextVar("hf_verify", default=None)


def _hf_async_client() -> httpx2.AsyncClient:
    """huggingface_hub's default async client (same hooks and options) with a shared SSL context, the calling
    engine's: its documented hook for "custom certifications", `set_async_client_factory`."""
    return httpx2.AsyncClient(
        event_hooks={"request": [async_hf_request_event_hook], "response": [async_hf_response_event_hook]},
        follow_redirects=True,
        timeout=None,
        verify=_HF_VERIFY.get() or _httpx2_ssl(),
    )


@contextlib.asynccontextmanager
async def inference_client(engine: EngineSettings) -> AsyncIterator[AsyncInferenceClient]:
    """An AsyncInferenceClient for the engine's server that verifies it like every other client of the engine; closed
    on exit. The service's chat calls and the doctor's probe both use it."""
    set_async_client_factory(_hf_async_client)  # process-wide, and the same every time: idempotent
    token = _HF_VERIFY.set(engine_tls(engine))
    try:
        api_key = engine.api_key.get_secret_value() if engine.api_key else None
        async with AsyncInferenceClient(
            base_url=engine.base_url, api_key=api_key, timeout=engine.timeout_seconds
        ) as client:
            yield client
    finally:
        _HF_VERIFY.reset(token)


class HFInferenceEngine:
    name = "hf_inference"
    streams = True  # chat() takes on_text (engines/base.py)

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._tokenizer: str | None = None  # "tgi", "llama.cpp" or "estimate" once the server was asked
        # A bad engine.ca_file (or one with an http:// URL) is a ConfigError here, before the first message. The
        # path is used as given: the app resolves it against the config dir first (base.engine_settings).
        self._verify = httpx_verify(settings)

    async def chat(self, turns: list[ChatTurn], on_text: OnText | None = None) -> str:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        start = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.max_retries + 1),
                wait=_WaitHonouringRetryAfter(),
                retry=retry_if_exception(_retryable_now),
                reraise=True,
            ):
                with attempt:
                    ENGINE_ATTEMPTS.labels(engine=self.name).inc()
                    return await self._stream(messages, on_text)
        except EngineUnavailable:
            ENGINE_ERRORS.labels(engine=self.name).inc()
            raise
        except Exception as exc:
            ENGINE_ERRORS.labels(engine=self.name).inc()
            problem = tls_problem(exc, self.settings)
            if problem is not None:
                log.error("engine %s: %s", self.name, problem)
                raise EngineUnavailable(f"{self.name}: {problem}", transient=False) from exc
            verdict = classify(exc)
            log.warning("engine %s failed (%s, transient: %s)", self.name, type(exc).__name__, verdict.retry)
            raise EngineUnavailable(
                f"{self.name}: {type(exc).__name__}", transient=verdict.retry, retry_after=verdict.after
            ) from exc
        finally:
            ENGINE_DURATION.labels(engine=self.name).observe(time.perf_counter() - start)
        raise EngineUnavailable(f"{self.name}: no attempt made")  # unreachable: AsyncRetrying yields at least once

    async def _stream(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> str:
        # Streaming keeps a slow generation alive under the per-read timeout instead of one long blocking call.
        # One client per call, closed with it: AsyncInferenceClient keeps every streamed response open on its exit
        # stack until the client is closed, so a long-lived client would hold one response per answer ever given.
        # The price is one new connection per answer, nothing next to a generation's seconds.
        pieces: list[str] = []
        async with inference_client(self.settings) as client:
            stream: Any = await client.chat_completion(
                messages=messages,
                model=self.settings.model,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                stream=True,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    if on_text is not None:  # a retried attempt starts again from its own first words
                        await on_text("".join(pieces))
        text = "".join(pieces).strip()
        if not text:
            raise EngineUnavailable(f"{self.name}: empty answer", transient=False)
        return text

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text by the server's own tokenizer: TGI's `POST /tokenize`, llama-cpp-python's
        `POST /extras/tokenize/count`. Which one the server has is found once; a server with neither (vLLM, a
        proxy) gets `estimate_tokens`. A server that cannot be reached now also gets the estimate, without
        remembering that: the chat call that follows will report the outage."""
        if self._tokenizer == "estimate":  # no client to build for a server known to have no tokenizer endpoint
            return [estimate_tokens(text) for text in texts]
        root = self.settings.base_url.rstrip("/").removesuffix("/v1")
        async with httpx.AsyncClient(timeout=5.0, verify=self._verify) as client:
            return [await self._count(client, root, text) for text in texts]

    async def _count(self, client: httpx.AsyncClient, root: str, text: str) -> int:
        kinds = [self._tokenizer] if self._tokenizer else ["tgi", "llama.cpp"]
        for kind in kinds:
            if kind == "estimate":
                break
            try:
                if kind == "tgi":
                    resp = await client.post(root + "/tokenize", json={"inputs": text})
                else:
                    body = {"input": text, "model": self.settings.model}
                    resp = await client.post(root + "/extras/tokenize/count", json=body)
            except httpx.HTTPError:
                return estimate_tokens(text)
            if resp.status_code in (404, 405):
                continue
            if resp.status_code != 200:
                return estimate_tokens(text)
            self._tokenizer = kind
            data = resp.json()
            return len(data) if kind == "tgi" else int(data["count"])
        self._tokenizer = "estimate"
        return estimate_tokens(text)

    async def ready(self) -> bool:
        url = self.settings.base_url.rstrip("/")
        probe = url + "/models" if url.endswith("/v1") else url + "/health"
        try:
            async with httpx.AsyncClient(timeout=2.0, verify=self._verify) as client:
                resp = await client.get(probe)
        except httpx.HTTPError:
            return False
        return resp.status_code < 500

    async def aclose(self) -> None:
        """Nothing to close: each call's client is closed when the call ends."""
