"""Both Containerfiles pass hadolint and pin their public base (no podman needed; tests/roles/test_images.py
shows hadolint does catch problems)."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import venv_bin
from tests.images.conftest import REPO


@pytest.mark.parametrize("name", ["Containerfile", "model-server.Containerfile"])
def test_containerfile_is_hadolint_clean(name: str) -> None:
    result = subprocess.run(
        [venv_bin("hadolint"), "--no-color", str(REPO / "images" / name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["Containerfile", "model-server.Containerfile"])
def test_public_base_is_pinned_by_digest(name: str) -> None:
    lines = (REPO / "images" / name).read_text().splitlines()
    default = next(line for line in lines if line.startswith("ARG BASE_IMAGE="))
    assert "@sha256:" in default and len(default.split("@sha256:")[1]) == 64
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
