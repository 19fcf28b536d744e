"""The two images, built once per session by scripts/build-images (cached: a no-op when nothing they are built from
changed), and the podman command line that works on these machines (docs/images.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# rootful podman here: crun refuses this host's hybrid cgroups, and containers may not raise their limits.
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]


@dataclass(frozen=True)
class Images:
    assistant: str
    model_server: str
    redis: str


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def require_podman() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/bootstrap installs it); the image tests need it")


@pytest.fixture(scope="session")
def images() -> Images:
    require_podman()
    started = time.monotonic()
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "scripts" / "build-images")], capture_output=True, text=True, timeout=3600, env=env, cwd=REPO
    )
    print(f"\n[scripts/build-images: {time.monotonic() - started:.0f} s]\n{result.stdout}")
    assert result.returncode == 0, f"scripts/build-images failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    tags = dict(
        line.split("=", 1) for line in (REPO / "build" / "images" / "tags.env").read_text().splitlines() if "=" in line
    )
    return Images(tags["ASSISTANT_IMAGE"], tags["MODEL_SERVER_IMAGE"], tags["REDIS_IMAGE"])


@pytest.fixture
def volume() -> Iterator[str]:
    """A fresh named volume, removed afterwards."""
    name = f"ai-assistant-test-{os.getpid()}-{time.monotonic_ns()}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)
