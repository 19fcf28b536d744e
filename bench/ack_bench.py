"""Ack benchmark: signed webhook acknowledgements per second and p50/p99 ack latency on one uvicorn worker, next to a
bare FastAPI "hello" endpoint measured in the same run on the same core, reported as ratios.

    .venv/bin/python bench/ack_bench.py [--payload generic] [--duration 10] [--rate 500]
    .venv/bin/python bench/ack_bench.py --against REV --rounds 4     # A/B: alternate with git revision REV

The server under test is the real `ai-assistant serve` (verify -> de-duplicate -> durable SQLite enqueue -> ack) with
workers disabled so only the ack path is measured. Load comes from wrk (Debian package) pinned to the other core, with
every request pre-signed and carrying its own event id, so no request is a duplicate. Two phases per server:
closed loop (32 connections, maximum throughput) and paced (`--rate` requests/s in total via wrk's delay hook).
Connector owners add payloads to PAYLOADS: a function that returns (connectors.yaml entry, path, signed requests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import ab_targets, service_env  # noqa: E402
from tests.helpers import SECRET, free_port, signed_generic_request, wait_until  # noqa: E402

Request = tuple[str, dict[str, str], bytes]  # path, headers, body
PayloadBuilder = Callable[[int], tuple[dict[str, Any], str, list[Request]]]


def generic_payload(n: int) -> tuple[dict[str, Any], str, list[Request]]:
    path = "/api/im/callback"
    connector = {
        "platform": "generic_im",
        "app_secret": SECRET,
        "webhook_url": f"https://bench.example{path}",
        "reply_url": "http://127.0.0.1:9/replies",
    }
    requests = []
    for i in range(n):
        body, headers = signed_generic_request(
            {"type": "message", "event_id": f"bench-{i}-{uuid.uuid4().hex[:8]}", "chat_id": f"c{i}", "user_id": f"u{i}",
             "text": "How do I reset my VPN password?"}  # own user and chat: ack_bench_platforms.QUOTA_FREE
        )  # fmt: skip
        requests.append((path, headers, body))
    return connector, path, requests


PAYLOADS: dict[str, PayloadBuilder] = {"generic": generic_payload}

from bench.ack_bench_platforms import PLATFORM_PAYLOADS  # noqa: E402  (feishu, slack: the IM connectors' payloads)

PAYLOADS.update(PLATFORM_PAYLOADS)

LUA = r"""
-- Pre-built raw HTTP requests, each stored as "<length>\n<bytes>" (too many for a Lua table literal).
local reqs = {}
local data = io.open("%(requests)s", "rb"):read("a")
local pos = 1
while pos <= #data do
  local nl = string.find(data, "\n", pos, true)
  local len = tonumber(string.sub(data, pos, nl - 1))
  reqs[#reqs + 1] = string.sub(data, nl + 1, nl + len)
  pos = nl + len + 1
end
local i = 0
local pace = %(pace)s
function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
function delay()
  return pace
end
function done(summary, latency, requests)
  local fmt = '{"requests": %%d, "errors": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "max_us": %%d}\n'
  local e = summary.errors
  local errors = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format(fmt, summary.requests, errors, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def write_requests(requests: list[Request], target: Path, host: str) -> None:
    with target.open("wb") as f:
        for path, headers, body in requests:
            head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            raw = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            f.write(f"{len(raw)}\n".encode() + raw)


def run_wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, Any]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def start(cmd: list[str], health: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=f, stderr=subprocess.STDOUT, env=env)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(health, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(up, 60, health)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def phases(
    url: str, requests: list[Request], work: Path, duration: int, rate: int, tag: str, pid: int
) -> dict[str, Any]:
    reqs = work / f"{tag}-requests.bin"
    write_requests(requests, reqs, url.removeprefix("http://"))
    results = {}
    # wrk has no fixed-rate mode: each paced connection waits `pace` ms between requests (3% below the nominal
    # interval to make up for the response time), and the achieved rate is reported.
    for phase, connections, pace in (("max", 32, 0), ("paced", 20, max(1, round(20 * 1000 / rate * 0.97)))):
        script = work / f"{tag}-{phase}.lua"
        script.write_text(LUA % {"requests": reqs, "pace": pace})
        # The server's CPU time per request as well as the rate: on a shared machine the rate follows the time
        # slices the server got, while its CPU per request is its own cost (the ratio this run reports beside it).
        before = cpu_seconds(pid)
        results[phase] = run_wrk(url, script, duration, connections)
        results[phase]["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / max(1, results[phase]["requests"])
    return results


def measure(payload: str, duration: int, rate: int, service_path: Path | None = None) -> dict[str, Any]:
    """One run: the service (from `service_path` when given, else the installed package), then the baseline."""
    bin_dir = Path(sys.executable).parent
    env = service_env(service_path)  # an older checkout's package ahead of the installed one, when given
    with tempfile.TemporaryDirectory(prefix="ack-bench-") as tmp:
        work = Path(tmp)
        connector, _path, requests = PAYLOADS[payload](duration * 12_000)
        config = work / "config"
        config.mkdir()
        (config / "connectors.yaml").write_text(yaml.safe_dump({"bench": connector}))
        (config / "assistant.yaml").write_text(
            yaml.safe_dump(
                {
                    "worker": {"enabled": False},
                    # Workers are off, so the queue only grows: its bound (20,000 by default) would turn every ack
                    # after it into a cheap 503 and inflate the rate. The edge's own work is what is measured here.
                    "queue": {"max_depth": 0},
                    "server": {"log_level": "WARNING"},
                    "filters": {"words_file": None},
                    "store": {"sqlite_synchronous": os.environ.get("BENCH_SYNC", "FULL")},
                }
            )
        )
        port = free_port()
        env_cmd = [
            str(bin_dir / "ai-assistant"),
            "serve",
            "--config-dir",
            str(config),
            "--data-dir",
            str(work / "data"),
        ]
        service = start([*env_cmd, "--port", str(port)], f"http://127.0.0.1:{port}/healthz", work / "service.log", env)
        try:
            assistant = phases(f"http://127.0.0.1:{port}", requests, work, duration, rate, "assistant", service.pid)
        finally:
            service.terminate()
            service.wait(30)
        hello_requests = [("/hello", h, b) for _, h, b in requests]
        baseline = baseline_phases("hello_app:app", "/docs", hello_requests, work, duration, rate)
        sdk = None
        if payload == "feishu":  # issue 24: the Feishu edge next to lark-oapi's own dispatcher, same requests
            sdk = baseline_phases("lark_app:app", "/healthz", requests, work, duration, rate, lark_env(connector))
    report = {
        "payload": payload,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "assistant": assistant,
        "hello": baseline,
        "ratio_max_rps": assistant["max"]["rps"] / baseline["max"]["rps"],
        "paced_rate": rate,
    }
    if sdk is not None:
        report["lark"] = sdk
        report["ratio_lark_max_rps"] = assistant["max"]["rps"] / sdk["max"]["rps"]
        report["ratio_lark_cpu"] = sdk["max"]["cpu_us"] / assistant["max"]["cpu_us"]
    return report


def lark_env(connector: dict[str, Any]) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_FEISHU_ENCRYPT_KEY": connector["encrypt_key"],
        "BENCH_FEISHU_TOKEN": connector["verification_token"],
    }


def baseline_phases(
    app: str,
    health: str,
    requests: list[Request],
    work: Path,
    duration: int,
    rate: int,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A baseline app from bench/ on the same uvicorn settings and core as the service, through the same phases."""
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "uvicorn"), "--app-dir", str(ROOT / "bench"), app,
           "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    tag = app.split("_")[0]
    proc = start(cmd, f"http://127.0.0.1:{port}{health}", work / f"{tag}.log", env)
    try:
        return phases(f"http://127.0.0.1:{port}", requests, work, duration, rate, tag, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def print_report(report: dict[str, Any], duration: int, label: str = "") -> None:
    rate = report["paced_rate"]
    print(f"\nack benchmark{label}, payload={report['payload']}, {duration}s per phase, server on CPU 0, wrk on CPU 1")
    print(f"{'':24}{'max req/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12} | "
          f"{f'@{rate}/s p50':>13}{'p99 ms':>9}{'errors':>8}")  # fmt: skip
    rows = [("signed webhook ack", report["assistant"]), ("bare FastAPI hello", report["hello"])]
    if "lark" in report:
        rows.append(("lark-oapi dispatcher", report["lark"]))
    for name, r in rows:
        m, p = r["max"], r["paced"]
        print(
            f"{name:24}{m['rps']:12.0f}{m['p50_us'] / 1000:9.2f}{m['p99_us'] / 1000:9.2f}{m['cpu_us']:12.0f} | "
            f"{p['p50_us'] / 1000:13.2f}{p['p99_us'] / 1000:9.2f}{m['errors'] + p['errors']:8d}"
        )
    print(f"ratio (ack / hello, max req/s): {report['ratio_max_rps']:.2f}   paced rate achieved: "
          f"{report['assistant']['paced']['rps']:.0f} req/s")  # fmt: skip
    if "lark" in report:
        print(f"ratio (ack / lark-oapi dispatcher, max req/s): {report['ratio_lark_max_rps']:.2f}   goal >= 1.2")
        print(f"ratio (lark-oapi dispatcher / ack, server CPU per request): {report['ratio_lark_cpu']:.2f}")
    if failed := [name for name, r in rows if r["max"]["errors"] + r["paced"]["errors"]]:
        print(f"NOT VALID: {', '.join(failed)} answered errors (non-2xx or socket errors), counted as requests")
    print(json.dumps(report))


def valid(report: dict[str, Any]) -> bool:
    servers = [report[k] for k in ("assistant", "hello", "lark") if k in report]
    return not any(s["max"]["errors"] + s["paced"]["errors"] for s in servers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="generic")
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase")
    parser.add_argument("--rate", type=int, default=500, help="paced phase: requests per second in total")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also measure the service as of git revision REV, alternating with this checkout (an A/B on one machine)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each (with --against: pairs, alternating)")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (scripts/bootstrap installs wrk)")
    with contextlib.ExitStack() as stack:
        targets = ab_targets(stack, args.against, "revision {rev}", "ack-bench-rev-")
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in targets}
        for _ in range(args.rounds):
            for label, path in targets:
                report = measure(args.payload, args.duration, args.rate, path)
                runs[label].append(report)
                print_report(report, args.duration, f" ({label})" if len(targets) > 1 else "")
    if len(targets) > 1 or args.rounds > 1:
        print("\nsummary: ratio (ack / hello, max req/s) and ack p99 at the paced rate, run by run")
        for label, reports in runs.items():
            ratios = [r["ratio_max_rps"] for r in reports]
            p99 = [r["assistant"]["paced"]["p99_us"] / 1000 for r in reports]
            mean = sum(ratios) / len(ratios)
            print(f"{label:>24}: ratio {' '.join(f'{x:.2f}' for x in ratios)} (mean {mean:.2f})"
                  f"   p99 ms {' '.join(f'{x:.1f}' for x in p99)}")  # fmt: skip
    if not all(valid(r) for reports in runs.values() for r in reports):
        sys.exit("a run answered errors: its rates are not valid (see NOT VALID above)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
