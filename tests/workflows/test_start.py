"""A workflow that does not validate stops `ai-assistant serve` at start, and fails `check-config`, with one line
naming the file and the node (real processes, as an operator runs them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.helpers import free_port, venv_bin, write_config
from tests.workflows.test_schema import valid


def bad_config(tmp_path: Path) -> Path:
    config = write_config(tmp_path / "c", reply_url="http://127.0.0.1:9/r", engine_url="http://127.0.0.1:9/v1")
    doc = valid()
    doc["nodes"].append({"id": "lost", "kind": "reply", "text": "never reached"})
    (config / "workflows").mkdir()
    (config / "workflows" / "orders.yaml").write_text(yaml.safe_dump(doc))
    return config


EXPECTED = "error: workflows/orders.yaml: node lost: is unreachable from the trigger"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ERP_TOKEN": "set-for-this-test"}
    return subprocess.run([venv_bin("ai-assistant"), *args], capture_output=True, text=True, env=env, timeout=300)


def test_check_config_refuses_a_bad_workflow_in_one_line(tmp_path: Path) -> None:
    result = run("check-config", "--config-dir", str(bad_config(tmp_path)), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [EXPECTED]


def test_serve_refuses_to_start_with_a_bad_workflow(tmp_path: Path) -> None:
    config = bad_config(tmp_path)
    result = run("serve", "--config-dir", str(config), "--data-dir", str(tmp_path / "d"), "--port", str(free_port()))
    assert result.returncode != 0
    assert EXPECTED in result.stderr and "Traceback" not in result.stderr, result.stderr
