"""Bad configuration fails at start with one line naming the file and the key, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import SECRET, venv_bin, write_config


def check(config: Path, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [venv_bin("ai-assistant"), "check-config", "--config-dir", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def connector(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "platform": "generic_im",
        "app_id": "a",
        "app_secret": SECRET,
        "webhook_url": "https://x.example/api/im/callback",
        "bot_name": "AI助理",
        "reply_url": "http://127.0.0.1:9/replies",
    }
    return {**base, **overrides}


def test_valid_config_passes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", reply_url="http://127.0.0.1:9/r", engine_url="http://127.0.0.1:9/v1")
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 1 connector(s): im-connector" in result.stdout


CASES = {
    "unknown assistant key": (
        {"assistant": {"server": {"prot": 1}}},
        "assistant.yaml (or AI_ASSISTANT_* environment): server.prot: unknown key",
    ),
    "bad value": ({"assistant": {"server": {"port": "eighty"}}}, "server.port:"),
    "answer longer than the context window": (
        {"assistant": {"engine": {"max_tokens": 4096}}},
        "engine: max_tokens (4096) must be less than context_tokens (2048): the answer and the prompt share",
    ),
    "unknown placeholder in too_long_reply": (
        {"assistant": {"engine": {"too_long_reply": "Too long ({count} tokens)"}}},
        "engine.too_long_reply: bad placeholder 'count'; the text may use {tokens} and {limit}",
    ),
    "negative queue bound": ({"assistant": {"queue": {"max_depth": -1}}}, "queue.max_depth:"),
    "a quota burst of zero": ({"assistant": {"quotas": {"user_burst": 0}}}, "quotas.user_burst:"),
    "unknown quotas key": ({"assistant": {"quotas": {"per_user": 5}}}, "quotas.per_user: unknown key"),
    "unknown connector key": (
        {"connectors": {"im": connector(app_secert="x")}},
        "connectors.yaml: im.app_secert: unknown key",
    ),
    "missing secret": (
        {"connectors": {"im": {k: v for k, v in connector().items() if k != "app_secret"}}},
        "connectors.yaml: im.app_secret: required key is missing",
    ),
    "placeholder secret": (
        {"connectors": {"im": connector(app_secret="YOUR_APP_SECRET")}},
        "connectors.yaml: im.app_secret:",
    ),
    "unset env reference": (
        {"connectors": {"im": connector(app_secret="${NOT_SET_ANYWHERE}")}},
        "connectors.yaml: im.app_secret: environment variable NOT_SET_ANYWHERE is not set",
    ),
    "duplicate paths": (
        {"connectors": {"a": connector(), "b": connector()}},
        "connectors.yaml: b.webhook_url: path /api/im/callback is already used by a",
    ),
    "unknown platform": (
        {"connectors": {"im": connector(platform="icq")}},
        "connectors.yaml: im.platform: no connector named 'icq'",
    ),
    "missing platform": (
        {"connectors": {"im": {"app_id": "x"}}},
        "connectors.yaml: im.platform: required key is missing",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_config_is_one_clear_line(tmp_path: Path, case: str) -> None:
    change, expected = CASES[case]
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        assistant=change.get("assistant"),
        connectors=change.get("connectors"),
    )
    result = check(config, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", reply_url="http://127.0.0.1:9/r", engine_url="http://127.0.0.1:9/v1")
    (config / "connectors.yaml").write_text("im:\n  platform: [generic_im\n")
    result = check(config, tmp_path)
    assert result.returncode == 2 and "connectors.yaml: line" in result.stderr and "not valid YAML" in result.stderr


def test_missing_connectors_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c", reply_url="http://127.0.0.1:9/r", engine_url="http://127.0.0.1:9/v1")
    (config / "connectors.yaml").unlink()
    result = check(config, tmp_path)
    assert result.returncode == 2 and "connectors.yaml: not found" in result.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"server": {"port": 8080}},
    )
    result = check(config, tmp_path, env={"AI_ASSISTANT_SERVER__PORT": "notaport"})
    assert result.returncode == 2 and "server.port" in result.stderr


def test_env_reference_expands(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        connectors={"im": connector(app_secret="${TEST_GENERIC_SECRET}")},
    )
    assert check(config, tmp_path, env={"TEST_GENERIC_SECRET": SECRET}).returncode == 0
    assert yaml.safe_load((config / "connectors.yaml").read_text())["im"]["app_secret"] == "${TEST_GENERIC_SECRET}"
