"""The one-host compose install (compose.yaml, scripts/compose-env) run with podman-compose: up, a signed message
answered, down keeping the data, up again still de-duplicating the old event; and its bad input, each one clear error.
The only stand-in is the IM platform's receiving side (ReplyReceiver, on loopback)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    ReplyReceiver,
    free_port,
    message,
    metric_value,
    signed_generic_request,
    venv_bin,
    wait_until,
    write_config,
)
from tests.images.conftest import REPO, Images, podman, require_podman

COMPOSE_ENV = REPO / "scripts" / "compose-env"


def compose_env(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(COMPOSE_ENV), *args], capture_output=True, text=True, timeout=60)


def read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_env_generates_secrets_once_per_install(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    assert compose_env(str(first), "ASSISTANT_PORT=18080").returncode == 0
    assert compose_env(str(second)).returncode == 0
    a, b = read_env(first), read_env(second)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert a["AI_ASSISTANT_GENERIC_SECRET"].startswith("whsec_") and len(a["REDIS_PASSWORD"]) == 64
    assert a["AI_ASSISTANT_GENERIC_SECRET"] != b["AI_ASSISTANT_GENERIC_SECRET"]
    assert a["REDIS_PASSWORD"] != b["REDIS_PASSWORD"]
    assert a["ASSISTANT_PORT"] == "18080" and b["ASSISTANT_PORT"] == "8080"
    # Run again: the install keeps its secrets (the IM platform and the Redis data depend on them).
    before = first.read_text()
    again = compose_env(str(first), "ASSISTANT_PORT=19090")
    assert again.returncode == 0 and "kept" in again.stdout
    assert first.read_text() == before


@pytest.mark.parametrize(("arg", "expected"), [
    ("REDIS_PASSWORD=hunter2", "REDIS_PASSWORD is a secret: it is generated, not given"),
    ("ASSISTANT_PORT=80a", "ASSISTANT_PORT: '80a' is not a port"),
    ("REDIS_PORT=70000", "REDIS_PORT: '70000' is not a port"),
    ("ASSISTANT_PROT=8080", "unknown key 'ASSISTANT_PROT'"),
])  # fmt: skip
def test_compose_env_rejects_bad_input_with_one_line(tmp_path: Path, arg: str, expected: str) -> None:
    target = tmp_path / "install.env"
    result = compose_env(str(target), arg)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == []


def podman_compose() -> str:
    binary = venv_bin("podman-compose")
    if not Path(binary).exists():
        pytest.fail("podman-compose is not installed in the virtualenv: run `make bootstrap`")
    return binary


@pytest.fixture
def runc_conf(tmp_path: Path) -> dict[str, str]:
    """podman-compose calls plain `podman`: point it at runc (docs/images.md says why) through containers.conf."""
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


@pytest.mark.images
def test_compose_refuses_to_start_without_its_env_file(tmp_path: Path, runc_conf: dict[str, str]) -> None:
    require_podman()
    project_dir = tmp_path / "install"
    project_dir.mkdir()
    shutil.copy(REPO / "compose.yaml", project_dir / "compose.yaml")  # a fresh checkout: no .env beside it
    project = f"aiatest{free_port()}"
    result = subprocess.run(
        [podman_compose(), "-p", project, "up", "-d"],
        capture_output=True, text=True, timeout=300, cwd=project_dir, env=runc_conf,
    )  # fmt: skip
    last_line = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in last_line and "run scripts/compose-env first" in last_line, last_line
    leftovers = podman("ps", "--all", "--quiet", "--filter", f"label=io.podman.compose.project={project}").stdout
    assert leftovers.strip() == "", "nothing may be half-started"


class Install:
    def __init__(self, env_file: Path, project: str, env: dict[str, str], receiver: ReplyReceiver) -> None:
        self.env_file, self.project, self.env, self.receiver = env_file, project, env, receiver
        self.values = read_env(env_file)
        self.base = f"http://127.0.0.1:{self.values['ASSISTANT_PORT']}"

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [podman_compose(), "-f", str(REPO / "compose.yaml"), "-p", self.project, "--env-file", str(self.env_file)]
        result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, env=self.env)
        assert result.returncode == 0, f"compose {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def up(self) -> None:
        self.compose("up", "-d")
        wait_until(self._healthy, 300, f"the compose install's assistant on {self.base}", interval=1)

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.base + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def send(self, event_id: str, delivery: str) -> None:
        secret = self.values["AI_ASSISTANT_GENERIC_SECRET"]
        body, headers = signed_generic_request(message(event_id), secret, msg_id=delivery)
        resp = httpx.post(self.base + "/api/im/callback", content=body, headers=headers, timeout=30)
        assert resp.status_code == 200 and resp.json()["ok"] is True, resp.text

    def volumes(self) -> set[str]:
        names = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        return {n.removeprefix(self.project + "_") for n in names if n.startswith(self.project + "_")}


@pytest.fixture
def install(images: Images, tmp_path: Path, runc_conf: dict[str, str]) -> Iterator[Install]:
    config = tmp_path / "config"
    env_file = tmp_path / "install.env"
    ports = {key: str(free_port()) for key in ("ASSISTANT_PORT", "MODEL_SERVER_PORT", "REDIS_PORT")}
    result = compose_env(
        str(env_file),
        *(f"{k}={v}" for k, v in ports.items()),
        "MODEL_SERVER_THREADS=1",
        f"AI_ASSISTANT_CONFIG_DIR={config}",
        f"ASSISTANT_IMAGE={images.assistant}",
        f"MODEL_SERVER_IMAGE={images.model_server}",
        f"REDIS_IMAGE={images.redis}",
    )
    assert result.returncode == 0, result.stderr
    # The stand-in for the IM platform checks the answers' signatures with this install's generated secret.
    receiver = ReplyReceiver(secret=read_env(env_file)["AI_ASSISTANT_GENERIC_SECRET"])
    write_config(
        config,
        reply_url=receiver.url,
        engine_url="http://127.0.0.1:9/v1",  # compose.yaml points the engine at its model server
        connectors={
            "im-connector": {
                "platform": "generic_im",
                "app_id": "compose-test",
                "app_secret": "${AI_ASSISTANT_GENERIC_SECRET}",
                "webhook_url": "https://assistant.example/api/im/callback",
                "bot_name": "AI助理",
                "reply_url": receiver.url,
            }
        },
    )
    inst = Install(env_file, f"aiatest{free_port()}", runc_conf, receiver)
    try:
        yield inst
    finally:
        receiver.close()
        for service in ("assistant", "model-server", "redis"):
            logs = podman("logs", f"{inst.project}_{service}_1", check=False)
            print(f"--- {service} ---\n{(logs.stdout + logs.stderr)[-2000:]}")
        subprocess.run(
            [podman_compose(), "-f", str(REPO / "compose.yaml"), "-p", inst.project, "--env-file", str(env_file),
             "down", "-v"],
            capture_output=True, timeout=600, env=runc_conf,
        )  # fmt: skip


@pytest.mark.images
@pytest.mark.timeout(3600)  # the images may be built first (see test_images.py)
def test_compose_round_trip_keeps_data_and_still_deduplicates(install: Install) -> None:
    receiver = install.receiver
    started = time.monotonic()
    install.up()
    print(f"\n[compose up: healthy in {time.monotonic() - started:.0f} s]")
    install.send("evt-compose", "delivery-1")
    wait_until(lambda: receiver.for_event("evt-compose"), 600, "the answer from the compose install", interval=0.5)

    install.compose("down")
    assert {"data", "models", "redis-data"} <= install.volumes(), "down keeps the volumes"

    install.up()
    # The platform re-delivers the old event (a new delivery id): acknowledged, not answered again.
    install.send("evt-compose", "delivery-2")
    metrics = httpx.get(install.base + "/metrics", timeout=10).text
    assert metric_value(metrics, "ai_assistant_duplicates_total") == 1
    # A new event is answered after the restart; by then a wrongly queued second answer would have arrived too.
    install.send("evt-compose-after", "delivery-3")
    wait_until(lambda: receiver.for_event("evt-compose-after"), 600, "an answer after the restart", interval=0.5)
    assert len(receiver.for_event("evt-compose")) == 1
