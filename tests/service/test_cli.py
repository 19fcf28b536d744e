"""The CLI as a user runs it: --help everywhere, and `ai-assistant up` + `ai-assistant chat` end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import free_port, venv_bin, wait_until

SUBCOMMANDS = ["up", "serve", "chat", "secret", "check-config", "version"]


@pytest.mark.parametrize("sub", [[], *([s] for s in SUBCOMMANDS)])
def test_help_everywhere(sub: list[str]) -> None:
    result = subprocess.run([venv_bin("ai-assistant"), *sub, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Usage" in result.stdout
    if sub and sub[0] in ("up", "serve", "chat", "check-config"):
        assert "--config-dir" in result.stdout and "--data-dir" in result.stdout


def test_secret_prints_a_fresh_standard_webhooks_secret() -> None:
    first, second = (
        subprocess.run([venv_bin("ai-assistant"), "secret"], capture_output=True, text=True, timeout=30).stdout.strip()
        for _ in range(2)
    )
    assert first.startswith("whsec_") and first != second


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.model
def test_up_answers_chat_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    service_port, model_port, inbox_port = free_port(), free_port(), free_port()
    config = tmp_path / "config"
    config.mkdir()
    repo_config = Path(__file__).resolve().parents[2] / "config"
    assistant = yaml.safe_load((repo_config / "assistant.yaml").read_text())
    assistant["server"]["port"] = service_port
    assistant["local_model"] = {"port": model_port, "threads": 1}
    (config / "assistant.yaml").write_text(yaml.safe_dump(assistant))
    connectors = yaml.safe_load((repo_config / "connectors.yaml").read_text())
    connectors["im-connector"]["webhook_url"] = f"http://127.0.0.1:{service_port}/api/im/callback"
    connectors["im-connector"]["reply_url"] = f"http://127.0.0.1:{inbox_port}/replies"
    (config / "connectors.yaml").write_text(yaml.safe_dump(connectors, allow_unicode=True))
    (config / "sensitive_words.txt").write_text((repo_config / "sensitive_words.txt").read_text())
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_ASSISTANT_")}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [venv_bin("ai-assistant"), "up", "--config-dir", str(config), "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_until(lambda: "ready" in log.read_text() or proc.poll() is not None, 120, "the ready line")
        assert proc.poll() is None, log.read_text()
        assert (data / "secrets.env").stat().st_mode & 0o777 == 0o600, "per-install secrets are private"
        chat = subprocess.run(
            [venv_bin("ai-assistant"), "chat", "--config-dir", str(config), "--data-dir", str(data), "-m", "Say hi."],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip(), "the model's answer is printed"
        assert _port_open(model_port) and _port_open(inbox_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    wait_until(lambda: not _port_open(model_port), 15, "the model server to stop")
    assert not _port_open(service_port) and not _port_open(inbox_port)
    assert "stopped the model server" in log.read_text()
