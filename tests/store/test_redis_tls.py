"""The Redis store over TLS, as the managed Redis serves it (ElastiCache / ApsaraDB: rediss:// with a password).

A real redis-server with --tls-port on loopback, its certificates made with `cryptography` (tests/pki.py): the store
works with the right CA, and a wrong CA, the system trust store (which does not hold this test CA) or a certificate
for another host name are refused with one line, in the store, in `doctor` and at `ai-assistant serve`'s start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from ai_assistant.errors import ConfigError
from ai_assistant.messages import InboundMessage
from ai_assistant.settings import Settings, load_settings
from ai_assistant.store import open_store
from ai_assistant.store.redis import RedisStore, check_tls
from tests.helpers import free_port, venv_bin, wait_until, write_config
from tests.pki import CA, make_ca, server_cert

pytestmark = pytest.mark.anyio

PASSWORD = "tls-test-" + uuid.uuid4().hex  # pragma: allowlist secret


def _pings_plain_socket(port: int) -> bool:
    # Readiness without TLS: redis-server accepts TCP on its TLS port once it is up; the TLS checks are the tests'.
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CA]:
    d = tmp_path_factory.mktemp("pki")
    return {"right": make_ca(d, "redis test CA"), "wrong": make_ca(d, "some other CA")}


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CA]) -> Iterator[Callable[[str], int]]:
    """Starts redis-server with only a TLS port, a password (the managed Redis' AUTH) and a certificate for the
    given DNS name (plus 127.0.0.1 when the name is 'localhost'); returns the port. Stopped at the module's end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test` (scripts/bootstrap installs it)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(dns: str) -> int:
        d = tmp_path_factory.mktemp("redis-tls")
        crt, key = server_cert(pki["right"], d, dns, "127.0.0.1" if dns == "localhost" else None)
        port = free_port()
        cmd = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        cmd += ["no", "--dir", str(d), "--requirepass", PASSWORD, "--tls-cert-file", str(crt)]
        cmd += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(pki["right"].pem), "--tls-auth-clients", "no"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_until(lambda: _pings_plain_socket(port), 20, "redis-server with TLS")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def port(tls_redis: Callable[[str], int]) -> int:
    return tls_redis("localhost")


def url(port: int, host: str = "127.0.0.1") -> str:
    return f"rediss://:{PASSWORD}@{host}:{port}/0"


def settings_for(config_dir: Path, redis_url: str, ca_file: str | None) -> Settings:
    """Settings as the assistant role writes them: the CA path in assistant.yaml, the URL (password) in the env."""
    store: dict[str, str] = {"backend": "redis"}
    if ca_file is not None:
        store["redis_ca_file"] = ca_file
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "assistant.yaml").write_text(yaml.safe_dump({"store": store}))
    settings = load_settings(config_dir, config_dir / "data")
    store_settings = settings.store.model_copy(update={"redis_url": SecretStr(redis_url)})
    return settings.model_copy(update={"store": store_settings})


def message() -> InboundMessage:
    return InboundMessage(
        connector="im", event_id=uuid.uuid4().hex, chat_id="c1", user_id="u", text="hi", received_at=time.time()
    )


async def test_the_store_works_over_rediss_with_the_ca_given(tmp_path: Path, port: int, pki: dict[str, CA]) -> None:
    shutil.copy(pki["right"].pem, tmp_path / "redis-ca.pem")
    # Relative to the config dir, like the other files assistant.yaml names.
    settings = settings_for(tmp_path, url(port), "redis-ca.pem")
    await check_tls(url(port), settings.resolve(Path("redis-ca.pem")))
    store = open_store(settings)
    try:
        m = message()
        assert await store.enqueue(m, 60)
        assert not await store.enqueue(m, 60), "de-duplicated over TLS like over TCP"
        job = await store.claim(30)
        assert job is not None and job.message.event_id == m.event_id
        assert await store.complete(job.id, job.lease_token)
        assert (await store.stats()).depth == 0
    finally:
        await store.close()


async def test_a_wrong_ca_is_refused_with_one_line(port: int, pki: dict[str, CA]) -> None:
    with pytest.raises(ConfigError) as caught:
        await check_tls(url(port), pki["wrong"].pem)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("assistant.yaml: store.redis_url: rediss://127.0.0.1:")
    assert f"not trusted by the CA in {pki['wrong'].pem}" in text
    assert "store.redis_ca_file" in text
    assert PASSWORD not in text
    # The store itself never talks to it either: no command is sent over an unverified connection.
    store = RedisStore(url(port), pki["wrong"].pem)
    try:
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await store.ping()
    finally:
        await store.close()


async def test_a_secrets_reload_reconnects_with_the_same_verification(
    tls_redis: Callable[[str], int], port: int, pki: dict[str, CA]
) -> None:
    """SIGHUP after a password rotation (app.reload_secrets): the new URL is verified with the same CA before the
    store switches to it, and a URL whose certificate does not verify leaves the store on the old connection."""
    store = RedisStore(url(port), pki["right"].pem)
    try:
        other = tls_redis("redis.other.internal")
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await store.reconnect(url(other))
        await store.ping()  # still on the first server
        await store.reconnect(url(port, host="localhost"))  # the certificate names localhost too
        assert await store.remember("after-reload-" + uuid.uuid4().hex, 60)
    finally:
        await store.close()


async def test_without_a_ca_file_the_system_store_is_used_and_does_not_trust_a_private_ca(port: int) -> None:
    with pytest.raises(ConfigError, match="not trusted by the default trust store"):
        await check_tls(url(port), None)


async def test_a_certificate_for_another_host_name_is_refused(
    tls_redis: Callable[[str], int], pki: dict[str, CA]
) -> None:
    other = tls_redis("redis.other.internal")  # signed by the right CA, but not for 127.0.0.1
    with pytest.raises(ConfigError, match=r"not trusted by the CA in .*(mismatch|match)"):
        await check_tls(url(other), pki["right"].pem)


async def test_an_unreachable_redis_is_not_a_tls_error() -> None:
    # Nothing listens there: that heals by itself (a Redis failover, a restart), so it must not stop the start.
    await check_tls(url(free_port()), None, seconds=2)


def test_a_ca_file_with_a_plain_url_or_a_missing_file_is_refused(tmp_path: Path, pki: dict[str, CA]) -> None:
    with pytest.raises(
        ConfigError, match=r"^assistant.yaml: store.redis_ca_file: set, but store.redis_url is redis://"
    ):
        open_store(settings_for(tmp_path / "a", "redis://127.0.0.1:6379/0", str(pki["right"].pem)))
    with pytest.raises(ConfigError, match=r"^assistant.yaml: store.redis_ca_file: .*missing-ca.pem: no such file$"):
        open_store(settings_for(tmp_path / "b", url(6379), "missing-ca.pem"))
    # A file that is there but holds no certificate (a password pasted instead, a truncated copy): refused the same way.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "not-a-ca.pem").write_text("the CA was meant to go here\n")
    with pytest.raises(
        ConfigError, match=r"^assistant.yaml: store.redis_ca_file: .*not-a-ca.pem: holds no PEM certificate$"
    ):
        open_store(settings_for(tmp_path / "c", url(6379), "not-a-ca.pem"))


async def test_doctor_reports_the_refused_certificate_on_one_line(
    tmp_path: Path, port: int, pki: dict[str, CA]
) -> None:
    from ai_assistant.doctor.report import Status
    from ai_assistant.doctor.state import state_store

    good, queue = await state_store(settings_for(tmp_path / "good", url(port), str(pki["right"].pem)), tmp_path)
    assert good.status == Status.PASS, good.summary
    assert queue is not None
    bad, queue = await state_store(settings_for(tmp_path / "bad", url(port), str(pki["wrong"].pem)), tmp_path)
    assert bad.status == Status.FAIL
    assert queue is None
    assert "\n" not in bad.summary and PASSWORD not in bad.summary
    assert f"not trusted by the CA in {pki['wrong'].pem}" in bad.summary


def test_serve_stops_at_start_with_one_line_for_a_wrong_ca(tmp_path: Path, port: int, pki: dict[str, CA]) -> None:
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/unused",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"store": {"backend": "redis", "redis_ca_file": str(pki["wrong"].pem)}},
    )
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "AI_ASSISTANT_STORE__REDIS_URL": url(port)}
    cmd = [venv_bin("ai-assistant"), "serve", "--config-dir", str(config), "--data-dir", str(data)]
    done = subprocess.run(
        [*cmd, "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: assistant.yaml: store.redis_url: rediss://127.0.0.1:"), lines
    assert "not trusted by the CA in" in lines[-1]
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
