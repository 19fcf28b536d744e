"""What the benchmarks in bench/ share: the repository on sys.path (they use the tests' real helpers and stand-ins),
process readings from /proc, redis-server as roles/redis runs it, the service with the stand-in engine and platform
receiver started and stopped together, and the A/B comparison with an older revision in a temporary git worktree.

Imported as `bench.common` (scripts put the repository root on sys.path first), so that the scripts work both when
run (`.venv/bin/python bench/x.py`) and when imported by tests (`bench.load_bench`, tests/bench).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faults.procs import EngineStandin  # noqa: E402
from tests.helpers import ReplyReceiver, ServiceProcess, free_port, wait_until, write_config  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
WEBHOOK_PATH = "/api/im/callback"  # the generic-IM connector's path in tests/helpers.py write_config
# The service's default poll interval; the tests' configuration polls faster, which would flatter every figure.
DEFAULT_POLL = {"poll_interval_seconds": 0.2}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: a value that was measured (with 10 values, p90 is the 9th smallest)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


class Redis:
    """redis-server as roles/redis runs it (AOF, fsync every second), on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (scripts/bootstrap installs it)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir),
             "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        self.client = redis.Redis(port=self.port)
        wait_until(self._pings, 15, "redis-server")

    def _pings(self) -> bool:
        with contextlib.suppress(Exception):
            return bool(self.client.ping())
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def depth(self) -> int:
        return int(self.client.zcard("aia:enqueued"))  # every queued message, in flight or waiting

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def service_env(service_path: Path | None) -> dict[str, str]:
    """Environment for a service process: an older checkout's package ahead of the installed one, when given."""
    env = dict(os.environ)
    if service_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(service_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@dataclass
class Stack:
    svc: ServiceProcess
    engine: EngineStandin
    receiver: ReplyReceiver
    redis: Redis | None
    config: Path


@contextlib.contextmanager
def standin_stack(
    workdir: Path,
    *,
    assistant: dict[str, Any],
    engine_args: tuple[str, ...] = ("--stall", "0"),
    redis: bool = False,
    service_path: Path | None = None,
    before_start: Any = None,
) -> Iterator[Stack]:
    """The real service (`ai-assistant serve`) with the fault tests' OpenAI-compatible engine stand-in, the tests'
    platform receiver (tests/helpers.py ReplyReceiver) and, when asked, redis-server as its store, all on loopback,
    started and stopped together. `assistant` is merged over write_config's settings; the store's URL is added.
    `before_start(config_dir, env)` runs once the configuration is written (e.g. to ingest documents)."""
    receiver = ReplyReceiver()
    engine = EngineStandin(workdir)
    engine.log = Path("/dev/null")  # the stand-in counts its requests in its log: a file read per request is not free
    store = Redis(workdir) if redis else None
    svc: ServiceProcess | None = None
    env = {"PYTHONPATH": service_env(service_path)["PYTHONPATH"]} if service_path else {}
    try:
        engine.start(*engine_args)
        settings = dict(assistant)
        if store is not None:
            settings["store"] = {**settings.get("store", {}), "backend": "redis", "redis_url": store.url}
        config = write_config(workdir / "config", reply_url=receiver.url, engine_url=engine.base_url,
                              assistant=settings)  # fmt: skip
        if before_start is not None:
            before_start(config, {**os.environ, **env})
        svc = ServiceProcess(config, workdir / "data", env=env).start(timeout=180)  # a busy machine imports slowly
        yield Stack(svc, engine, receiver, store, config)
    finally:
        if svc is not None:
            svc.stop()
        engine.kill()
        if store is not None:
            store.stop()
        receiver.close()


@contextlib.contextmanager
def checkout(rev: str, prefix: str = "bench-rev-") -> Iterator[Path]:
    """The repository at `rev` in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def ab_targets(
    stack: contextlib.ExitStack, against: str | None, label: str, prefix: str = "bench-rev-"
) -> list[tuple[str, Path | None]]:
    """What an A/B run measures, alternating: this checkout (the installed package, or PYTHONPATH's), then revision
    `against`'s service/ from a temporary worktree that `stack` removes. `label` names the older one
    (`{rev}` is replaced by the revision)."""
    targets: list[tuple[str, Path | None]] = [("this checkout", None)]
    if against:
        targets.append((label.format(rev=against), stack.enter_context(checkout(against, prefix)) / "service"))
    return targets
