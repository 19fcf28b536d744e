"""images/Containerfile passes hadolint. The image is not built here: no base image can be pulled on these machines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_containerfile_is_hadolint_clean() -> None:
    result = hadolint(REPO / "images" / "Containerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_catch_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3013" in result.stdout  # unpinned pip install


def test_image_runs_unprivileged_with_a_healthcheck() -> None:
    text = (REPO / "images" / "Containerfile").read_text()
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text
    assert "--no-index" in text  # the runtime stage installs only the wheels built in the first stage
