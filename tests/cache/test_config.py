"""Bad `answer_cache` settings stop `check-config` (and so the service) with one line naming the file and the key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import venv_bin, write_config


def check_config(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_bin("ai-assistant"), "check-config", "--config-dir", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


@pytest.mark.parametrize(
    ("answer_cache", "key", "problem"),
    [
        ({"connectors": ["im-connector"], "ttl_seconds": -5}, "answer_cache.ttl_seconds", "greater than 0"),
        ({"connectors": ["im-connector"], "max_entries": 0}, "answer_cache.max_entries", "greater than or equal to 1"),
        ({"connectors": ["im-conector"]}, "answer_cache.connectors[0]", "no connector named 'im-conector'"),
        ({"conectors": ["im-connector"]}, "answer_cache.conectors", "unknown key"),
    ],
)
def test_bad_answer_cache_settings_are_one_line_naming_the_key(
    tmp_path: Path, answer_cache: dict[str, object], key: str, problem: str
) -> None:
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"answer_cache": answer_cache},
    )
    result = check_config(config, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "assistant.yaml" in lines[0] and key in lines[0] and problem in lines[0], lines[0]


def test_a_valid_answer_cache_passes(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"answer_cache": {"connectors": ["im-connector"], "ttl_seconds": 3600, "max_entries": 500}},
    )
    result = check_config(config, tmp_path)
    assert result.returncode == 0, result.stderr
