"""The engine's failure classification and client lifetime (issue 16, items 3 and 8), with the exceptions the pinned
libraries really raise: huggingface_hub 2.x's own httpx fork (httpx2), httpx, and the standard library."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx
import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError

from ai_assistant.engines.hf_inference import HFInferenceEngine, classify, retry_after
from ai_assistant.errors import EngineUnavailable
from ai_assistant.messages import ChatTurn
from ai_assistant.settings import EngineSettings
from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin
from tests.helpers import free_port

pytestmark = pytest.mark.anyio


def _hf_error(status: int, headers: dict[str, str] | None = None) -> HfHubHTTPError:
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return HfHubHTTPError(f"{status}", response=response)


@pytest.mark.parametrize(
    ("status", "retry"), [(500, True), (502, True), (503, True), (429, True), (408, True), (400, False), (404, False)]
)
def test_statuses(status: int, retry: bool) -> None:
    assert classify(_hf_error(status)).retry is retry


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert classify(_hf_error(429, {"retry-after": "7"})).after == 7
    assert retry_after(_hf_error(503, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0, "a past date"
    assert retry_after(_hf_error(503, {"retry-after": "soon"})) is None


def test_transport_errors_of_any_http_library_are_transient() -> None:
    request2 = httpx2.Request("POST", "http://127.0.0.1:1/")
    request1 = httpx.Request("POST", "http://127.0.0.1:1/")
    for exc in (
        httpx2.ConnectError("refused", request=request2),
        httpx2.RemoteProtocolError("cut off mid-stream", request=request2),
        httpx2.ReadTimeout("slow", request=request2),
        httpx.ConnectError("refused", request=request1),
        ConnectionResetError(),
        TimeoutError(),
    ):
        assert classify(exc).retry, exc


def test_our_own_bugs_are_not_retried() -> None:
    assert not classify(ValueError("bad json")).retry
    assert not classify(KeyError("choices")).retry


async def test_refused_connections_are_retried_by_the_pinned_client(tmp_path: Path) -> None:
    engine = HFInferenceEngine(EngineSettings(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1))
    with pytest.raises(EngineUnavailable, match="ConnectError") as caught:
        await engine.chat([ChatTurn("user", "hi")])
    assert caught.value.transient, "a refused connection (an httpx2 error) is an outage, not our bug"


async def test_streamed_responses_are_not_kept_after_the_answer(tmp_path: Path) -> None:
    stand_in = EngineStandin(tmp_path).start()
    engine = HFInferenceEngine(EngineSettings(base_url=stand_in.base_url))

    def responses() -> int:
        gc.collect()
        return sum(isinstance(o, httpx2.Response) for o in gc.get_objects())

    try:
        # Other tests' responses, and the last one until the next call, may still be around: what counts is that
        # they do not pile up with the answers (the client used to hold every one: 200 after 200 answers).
        for _ in range(5):
            assert await engine.chat([ChatTurn("user", "hi")]) == ANSWER
        after_five = responses()
        for _ in range(15):
            assert await engine.chat([ChatTurn("user", "hi")]) == ANSWER
        assert responses() == after_five, "streamed responses are held after their answers"
    finally:
        await engine.aclose()
        stand_in.kill()
