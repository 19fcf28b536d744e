"""`<data dir>/ai-assistant.pid` with two slots of the service on one data directory (blue/green, playbooks/deploy.yml):
the slot that stops after the other one started must not delete the pid file of the slot that now serves, or
`rotate-secrets` and `backup restore` would think nothing runs."""

from __future__ import annotations

import os
from pathlib import Path

from ai_assistant.cli import PID_FILE, _pid_file
from ai_assistant.settings import load_settings


def test_a_stopping_service_removes_its_own_pid_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "config", tmp_path / "data")
    with _pid_file(settings):
        assert (tmp_path / "data" / PID_FILE).read_text().strip() == str(os.getpid())
    assert not (tmp_path / "data" / PID_FILE).exists()


def test_a_stopping_slot_keeps_the_pid_file_the_other_slot_wrote_since(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "config", tmp_path / "data")
    other = os.getpid() + 1  # the incoming slot's process, started after this one
    with _pid_file(settings):
        (tmp_path / "data" / PID_FILE).write_text(f"{other}\n")
    assert (tmp_path / "data" / PID_FILE).read_text().strip() == str(other)
