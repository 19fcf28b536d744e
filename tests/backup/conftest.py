"""Real parts for the backup tests: restic against moto's S3 server on loopback (the stand-in for the cloud bucket,
which cannot exist here), real SQLite, and a redis-server with persistence on, started by the test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import free_port, wait_until

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3:
    endpoint: str

    def repo(self, bucket: str, prefix: str = "host-a") -> str:
        return f"s3:{self.endpoint}/{bucket}/{prefix}"


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[S3]:
    """moto's S3 server (tests/helpers.py) for restic: the stand-in for the cloud bucket."""
    if shutil.which("restic") is None:
        pytest.fail("restic is not installed: scripts/bootstrap installs it (scripts/apt-packages.txt)")
    with helpers.moto_server(workdir / "moto.log") as endpoint:
        yield S3(endpoint)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def restic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The S3 keys and the repository password as the role's unit passes them: environment plus a 0600 file."""
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RESTIC_PASSWORD", raising=False)
    monkeypatch.setenv("RESTIC_CACHE_DIR", str(tmp_path / "restic-cache"))
    password = tmp_path / "restic.password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    return password


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server that writes RDB snapshots (the shared session Redis has persistence off)."""
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--appendonly", "no", "--dbfilename", "dump.rdb"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(pings, 20, "redis-server")
        yield f"redis://127.0.0.1:{port}/0", workdir / "dump.rdb"
    finally:
        client.close()
        proc.terminate()
        proc.wait(15)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`ai-assistant` as a real process, the way the systemd unit and an operator run it."""
    exe = Path(sys.executable).parent / "ai-assistant"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
