"""roles/backup's templates against the real command: the unit's ExecStart, with the environment file the role
writes, makes a backup in a real S3 API (moto on loopback) and the metrics file the alerts watch."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.backup.conftest import KEYS, S3
from tests.backup.state import write_kb
from tests.backup.test_drill import make_install
from tests.helpers import metric_value
from tests.roles.test_static import render


def _values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_the_units_command_and_environment_make_a_backup(tmp_path: Path, s3: S3, restic_env: Path) -> None:
    config, data = make_install(tmp_path)
    write_kb(data)
    textfiles = tmp_path / "textfile"
    variables = {
        "inventory_hostname": "app-1",
        "backup_s3_endpoint": s3.endpoint,
        "backup_bucket": "role-contract",
        "backup_restic_password": "correct horse battery staple",  # pragma: allowlist secret
        "backup_s3_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
        "backup_s3_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"],
        "backup_s3_region": "us-east-1",
        "backup_command": str(Path(sys.executable).parent / "ai-assistant"),
        "backup_config_dir": str(config),
        "backup_data_dir": str(data),
        "backup_textfile_directory": str(textfiles),
        "__backup_password_file": str(restic_env),
    }
    env_file = _values(render("backup", "backup.env.j2", variables))
    unit = render("backup", "ai-assistant-backup.service.j2", variables)
    timer = render("backup", "ai-assistant-backup.timer.j2", variables)
    assert env_file["RESTIC_REPOSITORY"] == f"s3:{s3.endpoint}/role-contract/app-1"
    assert "RandomizedDelaySec=1h" in timer and "Persistent=true" in timer
    assert "AI_ASSISTANT_BACKUP_REDIS_URL" not in env_file  # Redis is opt-in (backup_redis_enabled)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    env_file["RESTIC_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, **env_file})
    assert done.returncode == 0, done.stderr
    prom = (textfiles / "ai_assistant_backup.prom").read_text()
    assert metric_value(prom, "ai_assistant_backup_last_run_success", {"target": "assistant"}) == 1


def test_redis_url_is_built_from_the_backup_user_with_the_password_escaped() -> None:
    env_file = _values(
        render(
            "backup",
            "backup.env.j2",
            {
                "inventory_hostname": "data-1",
                "backup_s3_endpoint": "s3.eu-west-1.amazonaws.com",
                "backup_bucket": "b",
                "backup_redis_enabled": True,
                "backup_redis_password": "p@ss/word",  # pragma: allowlist secret
            },
        )
    )
    escaped = "redis://backup:p%40ss%2Fword@127.0.0.1:6379/0"  # pragma: allowlist secret
    assert env_file["AI_ASSISTANT_BACKUP_REDIS_URL"] == escaped
    assert env_file["RESTIC_REPOSITORY"] == "s3:s3.eu-west-1.amazonaws.com/b/data-1"


def test_the_default_command_is_the_serving_colours() -> None:
    """Blue/green: the unit runs the CLI through the assistant role's `current` link, which site.yml sets to the
    serving colour and every switch (slot_record.yml, also on a rollback and in the failed deploy's rescue) re-points
    at the colour it records; tests/roles/test_vm_bluegreen.py shows a backup after a switch made by green's code."""
    import yaml

    roles = Path(__file__).resolve().parents[2] / "roles"
    assistant = {
        **yaml.safe_load((roles / "assistant/defaults/main.yml").read_text()),
        **yaml.safe_load((roles / "assistant/vars/main.yml").read_text()),
    }
    current = assistant["__assistant_current"].replace(
        "{{ assistant_install_dir }}", assistant["assistant_install_dir"]
    )
    unit = render("backup", "ai-assistant-backup.service.j2", {"backup_s3_endpoint": "s3", "backup_bucket": "b"})
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith(f"ExecStart={current}/bin/ai-assistant backup create "), exec_start
    for tasks, src in (
        ("main.yml", "__assistant_slots[__assistant_serving_colour].venv"),
        ("slot_record.yml", "__assistant_slot.venv"),
    ):
        links = [
            t["ansible.builtin.file"]
            for t in yaml.safe_load((roles / "assistant/tasks" / tasks).read_text())
            if "ansible.builtin.file" in t and t["ansible.builtin.file"].get("state") == "link"
        ]
        assert [(link["dest"], link["src"]) for link in links] == [
            ("{{ __assistant_current }}", "{{ " + src + " }}")
        ], tasks
