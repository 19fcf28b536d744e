"""Real processes the fault tests start, kill and restart: the stand-in model server and redis-server."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port, wait_until


class EngineStandin:
    """tests/faults/engine_standin.py as a process on a fixed port: stop it, start it again, same port, same log."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = workdir / f"engine-{self.port}.jsonl"
        self.out = workdir / f"engine-{self.port}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, *args: str) -> EngineStandin:
        cmd = [sys.executable, "-m", "tests.faults.engine_standin", "--port", str(self.port), "--log", str(self.log)]
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._up, 30, f"engine stand-in on {self.port} ({self.out})")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"engine stand-in exited:\n{self.out.read_text()[-2000:]}")
        try:
            return httpx.get(self.base_url + "/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


class RedisProcess:
    """A real redis-server with an append-only file, so a kill -9 and a restart keep what was acknowledged."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed: run `make test` (scripts/bootstrap installs it)")
        self.binary = binary
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)]
        cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        wait_until(lambda: _pings(client), 15, f"redis-server on {self.port}")
        client.close()
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
