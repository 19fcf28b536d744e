"""Production engine: a Hugging Face text-generation-inference server (or any OpenAI-compatible server: vLLM, SGLang,
llama.cpp) through `huggingface_hub.AsyncInferenceClient.chat_completion`. The embedded default uses this very code
against the local llama.cpp server, so the production path is the tested path."""

from __future__ import annotations

import logging
import time

import httpx
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..errors import EngineUnavailable
from ..messages import ChatTurn
from ..observability import ENGINE_DURATION, ENGINE_ERRORS
from ..settings import EngineSettings

log = logging.getLogger(__name__)


def _retryable(exc: BaseException) -> bool:
    """Connection problems, timeouts and 5xx/429 are worth another try; other 4xx are our bug and are not."""
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500 or status == 429
    return isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError | OSError)


class HFInferenceEngine:
    name = "hf_inference"

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self._client = AsyncInferenceClient(
            base_url=settings.base_url, api_key=api_key, timeout=settings.timeout_seconds
        )

    async def chat(self, turns: list[ChatTurn]) -> str:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        start = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.max_retries + 1),
                wait=wait_exponential_jitter(multiplier=0.5, max=8),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    return await self._stream(messages)
        except Exception as exc:
            ENGINE_ERRORS.labels(engine=self.name).inc()
            log.warning("engine %s failed after retries: %s", self.name, type(exc).__name__)
            raise EngineUnavailable(f"{self.name}: {type(exc).__name__}") from exc
        finally:
            ENGINE_DURATION.labels(engine=self.name).observe(time.perf_counter() - start)
        raise EngineUnavailable(f"{self.name}: no attempt made")  # unreachable: AsyncRetrying yields at least once

    async def _stream(self, messages: list[dict[str, str]]) -> str:
        # Streaming keeps a slow generation alive under the per-read timeout instead of one long blocking call.
        pieces: list[str] = []
        stream = await self._client.chat_completion(
            messages=messages,
            model=self.settings.model,
            max_tokens=self.settings.max_tokens,
            temperature=self.settings.temperature,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        text = "".join(pieces).strip()
        if not text:
            raise EngineUnavailable(f"{self.name}: empty answer")
        return text

    async def ready(self) -> bool:
        url = self.settings.base_url.rstrip("/")
        probe = url + "/models" if url.endswith("/v1") else url + "/health"
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                resp = await client.get(probe)
        except httpx.HTTPError:
            return False
        return resp.status_code < 500

    async def aclose(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            await close()
