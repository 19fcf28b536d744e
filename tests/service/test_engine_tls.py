"""The model server on another host, behind a TLS terminator whose certificate the deployment's internal CA signs
(issue 23, item 4): `engine.ca_file`.

The OpenAI-compatible stand-in (tests/faults/engine_standin.py, plus TGI's /tokenize) served over real HTTPS on
loopback, with a certificate for IP 127.0.0.1 signed by a test CA (tests/pki.py). With that CA the answer streams back
and the server counts the tokens; with another CA, or the system trust store (which does not hold the test CA), the
certificate is refused once, as a configuration problem, never retried as an outage. The server counts TLS handshakes,
so "once" is what it saw, not what the client says it did. Bad values of engine.ca_file stop the start, check-config
and the doctor with the same one line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
import yaml
from fastapi import Request

from ai_assistant.doctor import diagnose
from ai_assistant.engines.base import engine_settings, estimate_tokens
from ai_assistant.engines.hf_inference import HFInferenceEngine, httpx_verify
from ai_assistant.errors import ConfigError, EngineUnavailable
from ai_assistant.messages import ChatTurn
from ai_assistant.settings import EngineSettings, Settings, load_settings
from tests.faults.engine_standin import ANSWER, build
from tests.helpers import free_port, venv_bin, wait_until, write_config
from tests.pki import CA, make_ca, server_cert

pytestmark = pytest.mark.anyio


@dataclass
class HTTPSEngine:
    """The stand-in behind TLS, in this process: `handshakes` counts every ClientHello it received."""

    port: int
    chat_log: Path
    handshakes: list[None] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> int:
        return len(self.chat_log.read_text().splitlines()) if self.chat_log.exists() else 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CA]:
    d = tmp_path_factory.mktemp("pki")
    return {"right": make_ca(d, "deployment internal CA"), "wrong": make_ca(d, "some other CA")}


@pytest.fixture(scope="module")
def https_engine(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CA]) -> Iterator[HTTPSEngine]:
    d = tmp_path_factory.mktemp("engine-tls")
    # The terminator's certificate names the host's private address only (an IP SAN), as on the GPU host.
    crt, key = server_cert(pki["right"], d, None, "127.0.0.1", days=90)
    engine = HTTPSEngine(free_port(), d / "chat.jsonl")
    app = build(engine.chat_log, fail=0, status=503, retry_after=None, stall=0.0, stall_count=0, answer=ANSWER)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> list[dict[str, Any]]:  # TGI's shape: one entry per token
        words = str((await request.json())["inputs"]).split()
        return [{"id": i, "text": w, "start": 0, "stop": 0} for i, w in enumerate(words)]

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=engine.port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(crt),
        ssl_keyfile=str(key),
    )
    config.load()
    assert config.ssl is not None
    # Called for every ClientHello, SNI or not (a client sends none for an IP address), before the certificate is
    # even sent: a refused handshake counts as much as one that went on to a request.
    config.ssl.sni_callback = lambda *_: engine.handshakes.append(None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the HTTPS engine stand-in")
    yield engine
    server.should_exit = True
    thread.join(10)


def config_dir(root: Path, base_url: str, ca_file: str | None) -> Path:
    """assistant.yaml as the assistant role writes it (the CA file next to it, named by engine.ca_file)."""
    engine: dict[str, Any] = {"base_url": base_url, "max_retries": 2, "timeout_seconds": 10}
    if ca_file is not None:
        engine["ca_file"] = ca_file
    root.mkdir(parents=True, exist_ok=True)
    (root / "assistant.yaml").write_text(yaml.safe_dump({"engine": engine}))
    return root


def settings_for(root: Path, base_url: str, ca_file: str | None) -> Settings:
    return load_settings(config_dir(root, base_url, ca_file), root / "data")


async def test_with_the_ca_the_answer_streams_back_and_the_server_counts_tokens(
    tmp_path: Path, https_engine: HTTPSEngine, pki: dict[str, CA]
) -> None:
    shutil.copy(pki["right"].pem, tmp_path / "engine-ca.pem")
    # Relative to the config dir, like the other files assistant.yaml names.
    engine = HFInferenceEngine(engine_settings(settings_for(tmp_path, https_engine.base_url, "engine-ca.pem")))
    seen: list[str] = []

    async def on_text(text: str) -> None:
        seen.append(text)

    assert await engine.chat([ChatTurn("user", "Name three colours.")], on_text=on_text) == ANSWER
    assert len(seen) > 1 and seen[-1] == ANSWER, "streamed word by word over TLS"
    texts = ["one two three four five six", "seven"]
    assert await engine.count_tokens(texts) == [6, 1], "TGI's /tokenize answered over TLS"
    assert [estimate_tokens(t) for t in texts] != [6, 1], "not the fallback estimate"
    assert await engine.ready()


async def test_a_different_ca_is_refused_once_as_a_configuration_problem(
    tmp_path: Path, https_engine: HTTPSEngine, pki: dict[str, CA], caplog: pytest.LogCaptureFixture
) -> None:
    settings = engine_settings(settings_for(tmp_path, https_engine.base_url, str(pki["wrong"].pem)))
    assert settings.max_retries == 2, "retries allowed: the refusal must still be a single attempt"
    engine = HFInferenceEngine(settings)
    before, requests = len(https_engine.handshakes), https_engine.chat_requests()
    with (
        caplog.at_level(logging.ERROR, "ai_assistant.engines.hf_inference"),
        pytest.raises(EngineUnavailable) as caught,
    ):
        await engine.chat([ChatTurn("user", "hi")])
    assert not caught.value.transient, "a wrong CA stays wrong: the user gets the error reply, the message no wait"
    assert len(https_engine.handshakes) - before == 1, "one attempt, not max_retries + 1"
    assert https_engine.chat_requests() == requests, "no request went over the unverified connection"
    text = str(caught.value)
    assert "\n" not in text
    assert f"engine.base_url {https_engine.base_url}: the server's TLS certificate is not trusted by the CA in" in text
    assert f"{pki['wrong'].pem} (" in text and text.endswith("; set engine.ca_file")
    logged = [r.getMessage() for r in caplog.records if "engine.ca_file" in r.getMessage()]
    assert len(logged) == 1 and "\n" not in logged[0] and "not trusted by the CA in" in logged[0], logged
    # The token count and the readiness probe verify with the same CA: no answer from an unverified server.
    assert not await engine.ready()
    assert await engine.count_tokens(["one two three four five six"]) == [
        estimate_tokens("one two three four five six")
    ]


async def test_without_a_ca_file_the_system_trust_store_refuses_the_private_ca(
    tmp_path: Path, https_engine: HTTPSEngine
) -> None:
    engine = HFInferenceEngine(engine_settings(settings_for(tmp_path, https_engine.base_url, None)))
    before = len(https_engine.handshakes)
    with pytest.raises(EngineUnavailable, match="not trusted by the default trust store") as caught:
        await engine.chat([ChatTurn("user", "hi")])
    assert not caught.value.transient
    assert len(https_engine.handshakes) - before == 1
    assert not await engine.ready()


async def test_two_engines_with_different_cas_in_one_process_each_verify_with_their_own(
    https_engine: HTTPSEngine, pki: dict[str, CA]
) -> None:
    """huggingface_hub's client factory is process-wide; the CA must still be the calling engine's, also when both
    call at once."""
    right = HFInferenceEngine(EngineSettings(base_url=https_engine.base_url, ca_file=pki["right"].pem))
    wrong = HFInferenceEngine(EngineSettings(base_url=https_engine.base_url, ca_file=pki["wrong"].pem, max_retries=0))
    outcomes: dict[str, object] = {}

    async def ask(name: str, engine: HFInferenceEngine) -> None:
        try:
            outcomes[name] = await engine.chat([ChatTurn("user", "hi")])
        except EngineUnavailable as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(ask, "right", right)
            tg.start_soon(ask, "wrong", wrong)
    assert outcomes["right"] == ANSWER
    assert isinstance(outcomes["wrong"], EngineUnavailable) and "not trusted" in str(outcomes["wrong"])


# ------------------------------------------------------------------------------------------------ bad input
def test_a_ca_file_with_an_http_url_is_refused(tmp_path: Path, pki: dict[str, CA]) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:8089/v1", str(pki["right"].pem))
    message = r"^assistant.yaml: engine.ca_file: set, but engine.base_url is http://, not https://$"
    with pytest.raises(ConfigError, match=message):
        engine_settings(settings)
    with pytest.raises(ConfigError, match=message):  # the engine itself too, whoever builds it
        HFInferenceEngine(EngineSettings(base_url="http://127.0.0.1:8089/v1", ca_file=pki["right"].pem))


def test_a_missing_ca_file_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "https://10.0.2.15/v1", "missing-ca.pem")
    with pytest.raises(ConfigError, match=r"^assistant.yaml: engine.ca_file: .*/missing-ca.pem: no such file$"):
        engine_settings(settings)


@pytest.mark.parametrize("content", ["key", "text"], ids=["the server's key pasted instead", "text"])
def test_a_ca_file_without_a_pem_certificate_is_refused(tmp_path: Path, pki: dict[str, CA], content: str) -> None:
    _, key = server_cert(pki["right"], tmp_path, None, "10.0.2.15")
    (tmp_path / "engine-ca.pem").write_bytes(key.read_bytes() if content == "key" else b"not a CA")
    settings = settings_for(tmp_path, "https://10.0.2.15/v1", "engine-ca.pem")
    with pytest.raises(
        ConfigError, match=r"^assistant.yaml: engine.ca_file: .*engine-ca.pem: holds no PEM certificate$"
    ):
        engine_settings(settings)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_bin("ai-assistant"), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_check_config_serve_and_doctor_report_a_bad_ca_file_on_one_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/unused",
        engine_url="https://127.0.0.1:9/v1",
        assistant={"engine": {"ca_file": "engine-ca.pem"}},  # never written
    )
    data = tmp_path / "data"
    line = f"error: assistant.yaml: engine.ca_file: {config / 'engine-ca.pem'}: no such file"
    for args in (["check-config"], ["serve", "--port", str(free_port())]):
        done = _run(*args, "--config-dir", str(config), "--data-dir", str(data))
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1] == line, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr + done.stdout

    done = _run("doctor", "--json", "--config-dir", str(config), "--data-dir", str(data))
    assert "Traceback" not in done.stderr + done.stdout
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    for name in ("config", "engine"):
        assert checks[name]["status"] == "fail"
        assert checks[name]["summary"] == line.removeprefix("error: "), checks[name]
    assert checks["engine probe"]["status"] == "skip"


# ------------------------------------------------------------------------------------------------ doctor
async def test_doctor_verifies_the_engine_with_its_ca(
    tmp_path: Path, https_engine: HTTPSEngine, pki: dict[str, CA]
) -> None:
    good = write_config(
        tmp_path / "good",
        reply_url="http://127.0.0.1:9/unused",
        engine_url=https_engine.base_url,
        assistant={"engine": {"ca_file": "engine-ca.pem"}},
    )
    shutil.copy(pki["right"].pem, good / "engine-ca.pem")
    report = await diagnose(good, tmp_path / "data")
    checks = {c.name: c for c in report.checks}
    assert checks["config"].status.value == "pass", checks["config"]
    assert checks["engine"].status.value == "pass", checks["engine"]
    assert checks["engine probe"].status.value == "pass", checks["engine probe"]
    tls = checks[f"tls 127.0.0.1:{https_engine.port}"]
    assert tls.status.value == "pass" and "engine's certificate valid for" in tls.summary, tls

    bad = write_config(
        tmp_path / "bad",
        reply_url="http://127.0.0.1:9/unused",
        engine_url=https_engine.base_url,
        assistant={"engine": {"ca_file": str(pki["wrong"].pem)}},
    )
    report = await diagnose(bad, tmp_path / "data")
    engine = {c.name: c for c in report.checks}["engine"]
    assert engine.status.value == "fail"
    assert "\n" not in engine.summary
    assert f"not trusted by the CA in {pki['wrong'].pem}" in engine.summary
    assert engine.summary.startswith(f"engine.base_url {https_engine.base_url}: ")
    assert engine.summary.endswith("; set engine.ca_file")


def test_the_ca_context_is_made_once_per_ca_file(pki: dict[str, CA]) -> None:
    """The performance property of hf_inference's shared contexts (docs/benchmarks.md): building one per client cost
    ~75 % of the service's CPU per answer. Two engines, or two calls, with one CA share one context."""
    a = httpx_verify(EngineSettings(base_url="https://10.0.2.15/v1", ca_file=pki["right"].pem))
    b = httpx_verify(EngineSettings(base_url="https://10.0.2.16/v1", ca_file=pki["right"].pem))
    c = httpx_verify(EngineSettings(base_url="https://10.0.2.15/v1", ca_file=pki["wrong"].pem))
    assert a is b and a is not c
    assert a.verify_mode == ssl.CERT_REQUIRED and a.check_hostname
