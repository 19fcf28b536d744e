"""`ai-assistant doctor` (and `/readyz?verbose`) run as the real CLI against real parts: the embedded stack (SQLite and
the real llama.cpp model server), an engine that is not running, broken configuration, and a stand-in platform API
(the one thing that cannot exist here: tests/connectors/standin.py) that refuses credentials. Clock skew is simulated
through the Date header of a loopback stand-in, never by touching the host's clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ai_assistant.doctor import RUNBOOK, SECTIONS, Status, tls_endpoint_check, tls_file_check
from ai_assistant.messages import InboundMessage
from ai_assistant.store.redis import RedisStore
from ai_assistant.store.sqlite import SQLiteStore
from tests.connectors import producers as p
from tests.connectors.standin import PlatformStandIn
from tests.helpers import ReplyReceiver, ServiceProcess, free_port, venv_bin, write_config


def _disk(path: Path) -> str:
    """What the disk check must say about the filesystem under `path`: this machine's, shared with everything else on
    it (a CI machine's disk below 20% free is a real warning, not a failure of the checks under test)."""
    from ai_assistant.doctor.state import DISK_FAIL_FREE_RATIO, DISK_WARN_FREE_RATIO

    usage = shutil.disk_usage(path)
    ratio = usage.free / usage.total
    return "fail" if ratio < DISK_FAIL_FREE_RATIO else "warn" if ratio < DISK_WARN_FREE_RATIO else "pass"


def doctor(config: Path, data: Path, *extra: str, as_json: bool = True) -> tuple[int, Any, str]:
    cmd = [venv_bin("ai-assistant"), "doctor", "--config-dir", str(config), "--data-dir", str(data), *extra]
    proc = subprocess.run([*cmd, *(["--json"] if as_json else [])], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout) if as_json else proc.stdout, proc.stderr


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def closed_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"  # a free port: nothing listens there


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


class SkewedServer:
    """A loopback HTTP server whose Date header is `skew` seconds off this host's clock (a receiver on another
    machine with a wrong clock). It answers every GET with 200."""

    def __init__(self, skew: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def date_time_string(self, timestamp: float | None = None) -> str:
                return formatdate(time.time() + skew, usegmt=True)

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/replies"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platform() -> Iterator[PlatformStandIn]:
    standin = PlatformStandIn().start()
    yield standin
    standin.stop()


def test_help_and_runbook_sections() -> None:
    result = subprocess.run([venv_bin("ai-assistant"), "doctor", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--config-dir", "--data-dir", "--json", "--tls-cert"):
        assert option in result.stdout
    # Every link a check prints lands on a section of the page, and the page has no section no check links to.
    page = (Path(__file__).resolve().parents[2] / RUNBOOK).read_text()
    headings = {line.removeprefix("## ").strip() for line in page.splitlines() if line.startswith("## ")}
    assert headings == set(SECTIONS)


# ------------------------------------------------------------------------------------------------ the embedded stack
@pytest.mark.model
def test_embedded_stack_passes_every_check_and_readyz_verbose_reports_the_same(
    model_server: str, receiver: ReplyReceiver, tmp_path: Path
) -> None:
    admin = "doctor-test-admin-" + secrets.token_hex(8)
    config = write_config(
        tmp_path / "config", reply_url=receiver.url, engine_url=model_server, assistant={"admin": {"token": admin}}
    )
    data = tmp_path / "data"
    service = ServiceProcess(config, data).start()  # so the state store exists, as on a running host
    try:
        rc, report, _ = doctor(config, data)
        checks = by_name(report)
        expected = [
            "config",
            "state store",
            "queue",
            "engine",
            "engine probe",
            "connector im-connector",
            "clock vs engine",
            "clock vs im-connector",
        ]
        for name in expected:
            assert checks[name]["status"] == "pass", checks[name]
        disks = {"disk (state)", "disk (models)"}
        for name in disks:
            assert checks[name]["status"] == _disk(tmp_path), checks[name]
        assert rc == (0 if _disk(tmp_path) != "fail" else 1)
        assert [c for c in report["checks"] if c["status"] in ("warn", "fail") and c["name"] not in disks] == []
        # Not applicable here, and saying so: knowledge is off in this config, nothing is https.
        assert checks["knowledge store"]["status"] == "skip" and checks["tls"]["status"] == "skip"
        probe = checks["engine probe"]["details"]
        assert probe["tokens"] >= 1 and probe["ttft_ms"] > 0
        assert "im-connector" in checks["config"]["summary"]
        assert receiver.received == []  # a probe never sends a message

        # Admin-only: /readyz is public behind nginx, and these checks name internal addresses and fetch tokens.
        refused = httpx.get(service.base + "/readyz", params={"verbose": ""}, timeout=30)
        assert refused.status_code == 401 and "checks" not in refused.json()
        resp = httpx.get(
            service.base + "/readyz",
            params={"verbose": ""},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=300,
        )
        verbose = resp.json()
        assert resp.status_code == 200 and verbose["ready"] is True, verbose
        assert {c["name"] for c in verbose["checks"]} == set(checks)
        assert by_name(verbose)["config"]["summary"].startswith("loaded at start: 1 connector(s)")
        assert httpx.get(service.base + "/readyz", timeout=30).json() == {
            "ready": True,
            "checks": {"store": "ok", "engine": "ok", "workers": "ok"},
        }
    finally:
        service.stop()


# ------------------------------------------------------------------------------------------------ platforms
def test_platform_refusing_credentials_fails_with_its_own_reason(
    platform: PlatformStandIn, receiver: ReplyReceiver, tmp_path: Path
) -> None:
    connectors = {
        "feishu-main": {
            "platform": "feishu",
            "api_base": platform.base,
            "app_id": p.FEISHU_APP_ID,
            "app_secret": "a-secret-feishu-no-longer-knows",  # pragma: allowlist secret
            "verification_token": p.FEISHU_TOKEN,
            "encrypt_key": p.FEISHU_KEY,
            "bot_open_id": p.FEISHU_BOT_OPEN_ID,
            "webhook_url": "https://assistant.example/im/feishu",
        },
        "wecom-main": {
            "platform": "wecom",
            "api_base": platform.base,
            "corp_id": p.WECOM_CORP,
            "agent_id": p.WECOM_AGENT,
            "secret": p.WECOM_SECRET,
            "token": p.WECOM_TOKEN,
            "encoding_aes_key": p.WECOM_AES_KEY,
            "webhook_url": "https://assistant.example/im/wecom",
        },
        "slack-main": {
            "platform": "slack",
            "api_base": platform.base + "/api",
            "bot_token": p.SLACK_BOT_TOKEN,
            "signing_secret": p.SLACK_SECRET,
            "webhook_url": "https://assistant.example/im/slack",
        },
        "telegram-ok": {
            "platform": "telegram",
            "api_base": platform.base,
            "bot_token": p.TG_BOT_TOKEN,
            "secret_token": p.TG_SECRET,
            "webhook_url": "https://assistant.example/im/telegram-ok",
        },
        "telegram-main": {
            "platform": "telegram",
            "api_base": closed_url(),
            "bot_token": p.TG_BOT_TOKEN,
            "secret_token": p.TG_SECRET,
            "webhook_url": "https://assistant.example/im/telegram",
        },
    }
    config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=closed_url("/v1"))
    (config / "connectors.yaml").write_text(yaml.safe_dump(connectors))
    # Feishu's answer to a wrong App Secret (HTTP 400, business code and message).
    platform.script("/tenant_access_token/internal", 400, {"code": 10014, "msg": "app secret invalid"})
    # Slack's answer to a revoked bot token (HTTP 200, ok: false).
    platform.script("/api/auth.test", 200, {"ok": False, "error": "token_revoked"})

    rc, report, _ = doctor(config, tmp_path / "data")
    checks = by_name(report)
    feishu, wecom, telegram = (checks[f"connector {n}"] for n in ("feishu-main", "wecom-main", "telegram-main"))
    assert rc == 1 and report["ok"] is False
    assert feishu["status"] == "fail" and "refused" in feishu["summary"], feishu
    assert "code 10014: app secret invalid" in feishu["summary"]
    assert feishu["runbook"] == "docs/runbooks/doctor.md#connectors"
    # The other platform, same stand-in, takes its credentials: failures are per connector.
    assert wecom["status"] == "pass" and "access token issued" in wecom["summary"], wecom
    assert telegram["status"] == "fail" and "unreachable" in telegram["summary"], telegram
    slack = checks["connector slack-main"]
    assert slack["status"] == "fail" and "refused" in slack["summary"] and "token_revoked" in slack["summary"], slack
    tg_ok = checks["connector telegram-ok"]
    assert tg_ok["status"] == "pass" and "@assistant_bot" in tg_ok["summary"], tg_ok
    assert p.TG_BOT_TOKEN not in json.dumps(report)  # Telegram's token is part of its URLs: never printed
    assert len(platform.token_calls()) == 2 and platform.sends() == []  # asked for tokens, sent nothing


# ------------------------------------------------------------------------------------------------ engine stopped
def test_stopped_engine_fails_and_names_it(receiver: ReplyReceiver, tmp_path: Path) -> None:
    engine_url = closed_url("/v1")
    config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=engine_url)

    rc, report, _ = doctor(config, tmp_path / "data")
    checks = by_name(report)
    assert rc == 1
    engine = checks["engine"]
    assert engine["status"] == "fail" and "hf_inference" in engine["summary"] and engine_url in engine["summary"]
    assert "unreachable" in engine["summary"] and engine["runbook"] == "docs/runbooks/doctor.md#engine"
    assert checks["engine probe"]["status"] == "skip"
    assert checks["connector im-connector"]["status"] == "pass"  # the rest still ran

    rc, text, _ = doctor(config, tmp_path / "data", as_json=False)
    line = next(ln for ln in text.splitlines() if ln.startswith("FAIL") and " engine " in ln)
    assert "hf_inference" in line and rc == 1
    assert "docs/runbooks/doctor.md#engine" in text and "failed" in text.splitlines()[-1]


# ------------------------------------------------------------------------------------------------ clock
@pytest.mark.model
@pytest.mark.parametrize(
    ("skew", "status", "words"),
    [
        (3600, "warn", "ahead of"),  # their clock behind ours by an hour: past Standard Webhooks' 300 s
        (-3600, "warn", "behind"),
        (90, "pass", "within the 300 s signature window"),
    ],
)
def test_clock_skew_past_the_signature_window_warns(
    model_server: str, tmp_path: Path, skew: int, status: str, words: str
) -> None:
    receiver = SkewedServer(-skew)  # their clock = ours - skew, so ours is `skew` seconds ahead
    try:
        config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=model_server)
        rc, report, _ = doctor(config, tmp_path / "data")
    finally:
        receiver.close()
    clock = by_name(report)["clock vs im-connector"]
    assert clock["status"] == status and words in clock["summary"], clock
    assert abs(clock["details"]["skew_seconds"] - skew) < 5 and clock["details"]["window_seconds"] == 300
    assert by_name(report)["clock vs engine"]["status"] == "pass"  # the model server shares this host's clock
    if status == "warn":
        assert clock["runbook"] == "docs/runbooks/doctor.md#clock-skew"
    # A warning is for a person: with the state file missing (warn) and everything else passing, exit 0.
    assert rc == 0 and report["ok"] is True


# ------------------------------------------------------------------------------------------------ broken config
def test_broken_connectors_file_reports_the_config_error_and_runs_the_other_checks(
    receiver: ReplyReceiver, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=closed_url("/v1"))
    placeholder = "YOUR_APP_SECRET"  # pragma: allowlist secret
    bad = {"im-connector": {"platform": "generic_im", "app_secret": placeholder, "reply_url": receiver.url}}
    (config / "connectors.yaml").write_text(yaml.safe_dump(bad))
    expired = tmp_path / "expired.pem"
    expired.write_bytes(_certificate(days_left=-2))

    rc, report, _ = doctor(config, tmp_path / "data", "--tls-cert", str(expired))
    checks = by_name(report)
    assert rc == 1
    assert checks["config"]["status"] == "fail"
    assert checks["config"]["summary"].startswith(f"{config / 'connectors.yaml'}: im-connector.app_secret:")
    assert checks["connectors"]["status"] == "skip"
    assert checks["engine"]["status"] == "fail"  # still checked: assistant.yaml loaded
    assert checks["state store"]["status"] == "warn" and checks["disk (state)"]["status"] == _disk(tmp_path)
    assert checks[f"tls {expired}"]["status"] == "fail" and "expired" in checks[f"tls {expired}"]["summary"]


def test_unreadable_assistant_yaml_still_checks_disk_and_state(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "assistant.yaml").write_text("engine: [unclosed\n")

    rc, report, _ = doctor(config, tmp_path / "data")
    checks = by_name(report)
    assert rc == 1
    assert checks["config"]["status"] == "fail" and "not valid YAML" in checks["config"]["summary"]
    assert {checks[n]["status"] for n in ("engine", "engine probe", "knowledge store", "connectors")} == {"skip"}
    assert checks["disk (state)"]["status"] == _disk(tmp_path) and checks["state store"]["status"] == "warn"


@pytest.mark.parametrize(
    ("assistant", "key"),
    [
        ({"knowledge": {"enabled": True, "embedder": {"name": "no-such-embedder"}}}, "knowledge.embedder.name"),
        ({"store": {"backend": "redis"}}, "store.redis_url"),
        ({"engine": {"name": "no-such-engine"}}, "engine.name"),
    ],
)
def test_check_config_still_refuses_what_the_service_refuses(
    tmp_path: Path, assistant: dict[str, Any], key: str
) -> None:
    """check-config now validates without building the parts: it must still refuse what building them refuses."""
    urls = {"reply_url": closed_url(), "engine_url": closed_url("/v1")}
    config = write_config(tmp_path / "config", assistant=assistant, **urls)
    cmd = [venv_bin("ai-assistant"), "check-config", "--config-dir", str(config), "--data-dir", str(tmp_path / "d")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"assistant.yaml: {key}:" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------------------ Redis
def test_redis_state_store_and_its_queue(redis_url: str, receiver: ReplyReceiver, tmp_path: Path) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own on the shared test server

    async def fill() -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        await client.flushdb()
        await client.aclose()
        store = RedisStore(url)
        for n in (1, 2):
            message = InboundMessage(connector="im-connector", event_id=f"e{n}", chat_id="c", user_id="u", text="hi")
            assert await store.enqueue(message, 3600)
        job = await store.claim(30)
        assert job is not None
        assert await store.dead_letter(job.id, job.lease_token, "engine unavailable")
        await store.close()

    asyncio.run(fill())
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=closed_url("/v1"),
        assistant={"store": {"backend": "redis", "redis_url": url}},
    )
    _, report, _ = doctor(config, tmp_path / "data")
    checks = by_name(report)
    port = url.split(":")[2].split("/")[0]
    state = checks["state store"]
    assert state["status"] == "pass" and f"Redis at 127.0.0.1:{port}" in state["summary"], state
    assert checks["queue"]["details"] == {"depth": 1, "oldest_age_seconds": pytest.approx(0, abs=120), "dead": 1}
    assert checks["queue"]["status"] == "warn"


def test_unreachable_redis_fails_without_showing_its_password(receiver: ReplyReceiver, tmp_path: Path) -> None:
    url = f"redis://:hunter2-not-shown@127.0.0.1:{free_port()}/0"
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=closed_url("/v1"),
        assistant={"store": {"backend": "redis", "redis_url": url}},
    )
    rc, report, stderr = doctor(config, tmp_path / "data")
    state = by_name(report)["state store"]
    assert rc == 1 and state["status"] == "fail" and "Redis at 127.0.0.1" in state["summary"], state
    assert "hunter2" not in json.dumps(report) + stderr
    assert by_name(report)["queue"]["status"] == "skip"


# ------------------------------------------------------------------------------------------------ never changes state
def test_doctor_and_check_config_change_nothing(receiver: ReplyReceiver, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=closed_url("/v1"))
    data = tmp_path / "data"
    data.mkdir()
    _stopped_service_state(data / "state.sqlite3")
    before = snapshot(tmp_path)

    rc, report, _ = doctor(config, data)
    assert rc == 1  # the engine is not running here
    queue = by_name(report)["queue"]
    assert queue["status"] == "warn" and queue["details"]["depth"] == 1 and queue["details"]["dead"] == 1, queue
    assert snapshot(tmp_path) == before  # not even a -wal or -shm file next to the database

    missing = tmp_path / "not-yet"
    for cmd in (["doctor", "--json"], ["check-config"]):
        subprocess.run(
            [venv_bin("ai-assistant"), *cmd, "--config-dir", str(config), "--data-dir", str(missing)],
            capture_output=True,
            timeout=300,
        )
        assert not missing.exists(), cmd


def _stopped_service_state(path: Path) -> None:
    """A state file as a stopped service leaves it: one message waiting, one given up on."""

    async def fill() -> None:
        store = SQLiteStore(path)
        for n in (1, 2):
            message = InboundMessage(connector="im-connector", event_id=f"e{n}", chat_id="c", user_id="u", text="hi")
            assert await store.enqueue(message, 3600)
        job = await store.claim(30)
        assert job is not None
        assert await store.dead_letter(job.id, job.lease_token, "engine unavailable")
        await store.close()

    asyncio.run(fill())
    assert not path.with_name(path.name + "-wal").exists()


# ------------------------------------------------------------------------------------------------ TLS
def _certificate(days_left: float, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=90))
        .not_valid_after(now + dt.timedelta(days=days_left))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("days_left", "status"),
    [(60, Status.PASS), (10, Status.WARN), (1, Status.FAIL), (-1, Status.FAIL)],
)
def test_certificate_file_days_left(tmp_path: Path, days_left: float, status: Status) -> None:
    pem = tmp_path / "fullchain.pem"
    pem.write_bytes(_certificate(days_left))
    check = tls_file_check(pem)
    assert check.status is status, check
    assert abs(check.details["days_left"] - days_left) < 1


def test_certificate_file_that_is_not_a_certificate_fails_with_a_line(tmp_path: Path) -> None:
    pem = tmp_path / "fullchain.pem"
    pem.write_text("not a certificate\n")
    check = tls_file_check(pem)
    assert check.status is Status.FAIL and "cannot read a PEM certificate" in check.summary
    assert tls_file_check(tmp_path / "missing.pem").status is Status.FAIL


def test_https_endpoint_with_an_untrusted_certificate_fails_with_the_tls_reason(tmp_path: Path) -> None:
    """A real TLS server on loopback with a self-signed certificate: the handshake's own verdict is the summary."""
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cert.pem").write_bytes(_certificate(30, key))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def run() -> Any:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await tls_endpoint_check("localhost", port, "engine")

    check = asyncio.run(run())
    assert check.status is Status.FAIL and "self-signed certificate" in check.summary, check
