"""The Debian 12 VM the role tests converge and inspect: built once per package list, booted once per session.

Timings of every phase (image build, boot, converges, check mode, reboot) are printed at the end of the run."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airgap import wheels as guest_wheels
from tests.helpers import ReplyReceiver
from tests.roles.vm.machine import VM, build_image, missing_tools

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TIMINGS: dict[str, float] = {}
# The slowest tasks of each play, from profile_tasks (printed after the timings table).
SLOWEST: dict[str, list[tuple[str, float]]] = {}
DOMAIN = "assistant.test"
# A monitoring host that is not the test runner: slirp delivers the runner's traffic from 10.0.2.2.
MONITORING_CIDR = "192.0.2.99/32"
RECAP = re.compile(r"^testvm\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


# Secrets the roles generate on the host when Pulumi did not pass them in (issue 9); digests only, never the values.
GENERATED_SECRET_FILES = (
    "/etc/ai-assistant/admin-token",
    "/etc/redis/ai-assistant.secret",
    "/etc/ai-assistant/secrets.env",
)


def secret_digests(tvm: TestVM) -> dict[str, str]:
    done = tvm.ssh("sha256sum " + " ".join(GENERATED_SECRET_FILES))
    assert done.returncode == 0, f"a generated secret file is missing: {done.stderr.strip()}"
    return {path: digest for digest, path in (line.split() for line in done.stdout.splitlines())}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """VM tests from every module share one converged VM; the few marked `vm_last` leave it in a state the others must
    not see (the runner's SSH connections throttled), so they run after all of them, whichever module they are in."""
    items.sort(key=lambda item: item.get_closest_marker("vm_last") is not None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("roles VM timings")
        for phase, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{phase:<28} {seconds:7.1f} s")
        terminalreporter.write_line(f"{'total':<28} {sum(TIMINGS.values()):7.1f} s")
    for play, tasks in SLOWEST.items():
        if tasks:
            terminalreporter.section(f"roles VM: slowest tasks of {play}", sep="-")
            for task, seconds in tasks[:8]:
                terminalreporter.write_line(f"{seconds:7.1f} s  {task}")


# profile_tasks' recap lines: "Task name ------------------------ 12.34s"
PROFILE_LINE = re.compile(r"^(?P<task>\S.*?) -+ (?P<seconds>\d+\.\d+)s$", re.M)


def slowest_tasks(output: str) -> list[tuple[str, float]]:
    """The per-task durations profile_tasks printed at the end of a play, slowest first."""
    recap = output.rsplit("TASKS RECAP", 1)
    if len(recap) < 2:
        return []
    section = recap[1].split("ROLES RECAP", 1)[0]
    found = [(m["task"], float(m["seconds"])) for m in PROFILE_LINE.finditer(section)]
    return sorted(found, key=lambda t: -t[1])


def mitogen_env() -> dict[str, str]:
    """Environment that runs ansible-playbook's tasks through Mitogen's linear strategy (a test-runner speed-up only:
    the roles, modules and results are the same; see TestVM.play)."""
    import ansible_mitogen

    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {
        "ANSIBLE_STRATEGY_PLUGINS": str(plugins),
        "ANSIBLE_STRATEGY": "mitogen_linear",
        # Mitogen checks host keys itself and ignores the inventory's StrictHostKeyChecking=no; the throwaway VM's
        # key is new on every boot, exactly as with the ssh transport's options.
        "ANSIBLE_HOST_KEY_CHECKING": "False",
    }


@dataclass
class PlayResult:
    rc: int
    ok: int
    changed: int
    failed: int
    unreachable: int
    log: Path
    output: str = field(repr=False)

    def tail(self, n: int = 6000) -> str:
        return self.output[-n:]

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported changed (from the default callback's `changed: [testvm]` lines)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line
            elif line.startswith("changed:"):
                names.append(current)
        return names


@dataclass
class TestVM:
    vm: VM
    workdir: Path
    inventory: Path
    ssh_config: Path
    receiver: ReplyReceiver
    connector_secret: str
    # sha256 of every secret the roles generate on the host, taken right after the first converge
    generated_secrets: dict[str, str] = field(default_factory=dict)
    # The root pebble signed the site certificate with, read right after the first converge: pebble makes a new root
    # at every start, so after a reboot its current root no longer verifies the certificate nginx serves.
    pebble_root: str = ""

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command in the guest over the shared control connection (see _write_ssh_config)."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "testvm", command], capture_output=True, text=True, timeout=timeout
        )

    def play(self, playbook: Path, *args: str, name: str, transport: str = "mitogen") -> PlayResult:
        """Run a playbook against the VM. `transport="ssh"` is Ansible's own SSH connection, the one operators and the
        hand-off use; the default runs the same modules through Mitogen, which keeps one Python interpreter in the guest
        instead of starting a new one per task (about 10 s a task under software emulation, ~0.3 s with Mitogen).
        The first converge always uses "ssh" (see the test_vm fixture), so the production transport runs every task."""
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            # Per-task durations in every log, and the slowest tasks in the timings table at the end of the run.
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "15",
        }
        if transport == "mitogen":
            env |= mitogen_env()
        elif transport != "ssh":
            raise ValueError(f"transport must be 'ssh' or 'mitogen', not {transport!r}")
        log = self.workdir / f"{name}.log"
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), str(playbook), *args]
        # Streamed to the log file so a slow converge can be followed while it runs.
        with log.open("w") as fh:
            # 50 min: the ssh-transport first converge took 20 min on a busy machine and 33 min on one shared by several
            # jobs; past this something is wrong, and CI (90 min) must still have time to report it.
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=3000)
        output = log.read_text()
        m = RECAP.search(output)
        ok, changed, unreachable, failed = (int(g) for g in m.groups()) if m else (0, 0, 1, 1)
        SLOWEST[name] = slowest_tasks(output)
        return PlayResult(proc.returncode, ok, changed, failed, unreachable, log, output)


def _timed(phase: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMINGS[phase] = time.monotonic() - start


def _artifacts(workdir: Path) -> dict[str, Path]:
    """The service wheel (rebuilt every run) and a wheelhouse of its and llama.cpp's dependencies (cached), collected
    as `make bundle` collects them (airgap/wheels.py)."""
    python = VENV_BIN / "python"
    try:
        wheel = guest_wheels.service_wheel(python, workdir / "dist")
        return {
            "wheel": wheel,
            "wheelhouse": guest_wheels.guest_wheelhouse(python, wheel),
            "gguf": guest_wheels.gguf_path(),
        }
    except guest_wheels.WheelError as exc:
        pytest.fail(str(exc))


def _write_inventory(workdir: Path, vm: VM, art: dict[str, Path], reply_port: int, secret: str) -> Path:
    host: dict[str, Any] = {
        "ansible_host": "127.0.0.1",
        "ansible_port": vm.ports["ssh"],
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(vm.key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        # slirp delivers every packet from the test runner as 10.0.2.2: it is the admin and the load balancer.
        "firewall_admin_cidrs": ["10.0.2.2/32"],
        "firewall_lb_cidrs": ["10.0.2.2/32"],
        "firewall_monitoring_cidrs": [MONITORING_CIDR, "2001:db8::99/128"],
        "firewall_ssh_rate_per_minute": 30,
        "firewall_ssh_burst": 10,
        "tls_mode": "acme",
        "tls_domains": [DOMAIN],
        "tls_acme_server": "https://localhost:14000/dir",
        "tls_acme_ca_bundle": "/etc/pebble/ca.pem",
        "tls_acme_email": "ops@assistant.test",
        "model_server_llamacpp_wheelhouse": str(art["wheelhouse"]),
        "model_server_model_src": str(art["gguf"]),
        "model_server_threads": 2,
        "assistant_wheel": str(art["wheel"]),
        "assistant_wheelhouse": str(art["wheelhouse"]),
        # TCG emulates every instruction: short answers keep the e2e test in minutes.
        "assistant_engine_max_tokens": 16,
        "assistant_engine_timeout_seconds": 300,
        "assistant_sensitive_words": ["forbiddenword"],
        "assistant_connectors": {
            "im-connector": {
                "platform": "generic_im",
                "app_id": "vm-test",
                "webhook_url": f"https://{DOMAIN}/api/im/callback",
                "reply_url": f"http://10.0.2.2:{reply_port}/replies",
                "bot_name": "AI助理",
            }
        },
        "assistant_connector_secrets": {"im-connector": {"app_secret": secret}},
    }
    # One host plays both the assistant and the data host (the single-host layout); Weaviate cannot run here.
    host["ai_assistant_weaviate_enabled"] = False
    # playbooks/monitoring.yml too: Prometheus and Alertmanager on the same host; Grafana's repository is offline.
    host["monitoring_grafana"] = False
    host["alertmanager_assistant_token"] = secrets.token_urlsafe(32)
    host["assistant_alerts_connector"] = "im-connector"
    host["assistant_alerts_chat_id"] = "ops-alerts"
    # The runner is the VM's load balancer: nginx takes the client address from its X-Forwarded-For.
    host["reverse_proxy_real_ip_from"] = ["10.0.2.2/32"]
    # A pager stand-in on the VM's loopback (test_vm_production.py starts it only while it stops the assistant).
    host["alertmanager_fallback_webhook_urls"] = ["http://127.0.0.1:9099/hook"]
    groups = {"assistant": {"hosts": {"testvm": host}}}
    groups.update({g: {"hosts": {"testvm": {}}} for g in ("data", "monitoring")})
    inventory = {"all": {"children": groups}}
    path = workdir / "inventory.json"
    path.write_text(json.dumps(inventory, ensure_ascii=False, indent=2))
    return path


def _write_ssh_config(workdir: Path, vm: VM) -> Path:
    path = workdir / "ssh_config"
    path.write_text(
        f"Host testvm\n  HostName 127.0.0.1\n  Port {vm.ports['ssh']}\n  User root\n  IdentityFile {vm.key}\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 10\n"
        # One TCP connection for all of testinfra's commands: the firewall rate-limits new SSH connections.
        f"  ControlMaster auto\n  ControlPath /tmp/aivm-{os.getpid()}-%C\n  ControlPersist 600\n"
    )
    return path


def _kept_vm(keep: Path) -> TestVM | None:
    """The converged VM an earlier run left running under VM_KEEP, if it still answers."""
    state_file = keep / "state.json"
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    vm = VM(Path(state["image"]), keep / "vm", ports=state["ports"])
    try:
        os.kill(state["pid"], 0)
        alive = vm.ssh("true", timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        alive = False
    if not alive:
        state_file.unlink()
        return None
    receiver = ReplyReceiver(bind_port=state["reply_port"])
    receiver.secret = state["secret"]
    tvm = TestVM(vm, keep, keep / "inventory.json", keep / "ssh_config", receiver, state["secret"])
    tvm.generated_secrets, tvm.pebble_root = state["generated_secrets"], state["pebble_root"]
    return tvm


def _keep_vm(keep: Path, tvm: TestVM, image: Path) -> None:
    assert tvm.vm.proc is not None
    state = {
        "image": str(image), "ports": tvm.vm.ports, "pid": tvm.vm.proc.pid, "reply_port": tvm.receiver.port,
        "secret": tvm.connector_secret, "generated_secrets": tvm.generated_secrets, "pebble_root": tvm.pebble_root,
    }  # fmt: skip
    (keep / "state.json").write_text(json.dumps(state))


@pytest.fixture(scope="session")
def test_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestVM]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"the VM tests need {', '.join(missing)} (scripts/bootstrap installs them from apt)")
    # VM_KEEP=DIR, for a developer iterating on VM checks only (CI never sets it): the first run converges and leaves
    # the VM running in DIR; later runs reuse it while it answers (`kill $(jq .pid DIR/state.json)` to drop it).
    # The checks then see whatever earlier runs left behind; CI's fresh converge is the one that counts.
    keep = Path(os.environ["VM_KEEP"]).resolve() if os.environ.get("VM_KEEP") else None
    if keep is not None:
        kept = _kept_vm(keep)
        if kept is not None:
            try:
                yield kept
            finally:
                kept.receiver.close()
            return
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
    workdir = keep or tmp_path_factory.mktemp("roles-vm")
    image = _timed("image build (cached: ~0)", build_image, workdir / "build.log")
    art = _timed("wheels", _artifacts, workdir)
    receiver = ReplyReceiver()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver.secret = secret
    vm = VM(image, workdir / "vm")
    vm.prepare()
    vm.start()
    try:
        _timed("boot", vm.wait_ssh)
        tvm = TestVM(
            vm,
            workdir,
            _write_inventory(workdir, vm, art, receiver.port, secret),
            _write_ssh_config(workdir, vm),
            receiver,
            secret,
        )
        prep = _timed("prepare (pebble)", tvm.play, REPO / "tests/roles/vm/prepare.yml", name="prepare")
        assert prep.rc == 0, f"prepare.yml failed (log {prep.log}):\n{prep.tail()}"
        # The production transport (Ansible's ssh connection) runs every task of the first converge; later plays
        # reuse the converged VM through Mitogen (TestVM.play).
        # VM_FIRST_CONVERGE_TRANSPORT=mitogen: a developer's quick iteration on later checks (CI keeps ssh).
        transport = os.environ.get("VM_FIRST_CONVERGE_TRANSPORT", "ssh")
        first = _timed("converge 1", tvm.play, REPO / "playbooks/site.yml", name="converge1", transport=transport)
        assert first.rc == 0 and first.failed == 0, f"first converge failed (log {first.log}):\n{first.tail()}"
        tvm.generated_secrets = secret_digests(tvm)
        root = tvm.ssh("curl -sS --cacert /etc/pebble/ca.pem https://127.0.0.1:15000/roots/0")
        assert root.returncode == 0 and "BEGIN CERTIFICATE" in root.stdout, root.stderr
        tvm.pebble_root = root.stdout
        if keep is not None:
            _keep_vm(keep, tvm, image)
        yield tvm
    finally:
        if keep is None:
            vm.stop()
        receiver.close()
        console = vm.console
        if console.exists():
            shutil.copy(console, workdir / "console-final.log")


@pytest.fixture(scope="session")
def pebble_root(test_vm: TestVM) -> str:
    """The root that verifies the site certificate (see TestVM.pebble_root)."""
    return test_vm.pebble_root
