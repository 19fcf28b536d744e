"""`ai-assistant backup` documents itself: every subcommand has --help naming its repository options."""

from __future__ import annotations

import pytest

from tests.backup.conftest import cli


@pytest.mark.parametrize("sub", ["create", "list", "verify", "restore"])
def test_backup_help(sub: str) -> None:
    done = cli("backup", sub, "--help", timeout=60)
    assert done.returncode == 0 and "Usage" in done.stdout
    assert "--repo" in done.stdout and "RESTIC_REPOSITORY" in done.stdout


def test_backup_without_a_repository_is_a_one_line_usage_error() -> None:
    done = cli("backup", "list", env={"RESTIC_REPOSITORY": ""}, timeout=60)
    assert done.returncode == 2 and "--repo" in done.stderr
