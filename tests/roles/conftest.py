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
import yaml

from tests.helpers import ReplyReceiver
from tests.roles.vm import airgap_proof, lynis_audit
from tests.roles.vm.jumphost import JumpHost, sshd_binary
from tests.roles.vm.machine import VM, build_image, free_port, missing_tools

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TIMINGS: dict[str, float] = {}
# The slowest tasks of each play, from profile_tasks (printed after the timings table).
SLOWEST: dict[str, list[tuple[str, float]]] = {}
DOMAIN = "assistant.test"
# A monitoring host that is not the test runner: slirp delivers the runner's traffic from 10.0.2.2.
MONITORING_CIDR = "192.0.2.99/32"
RECAP = re.compile(r"^testvm\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


# Secret files on the host (issue 9); digests only, never the values. The roles generate the admin token and the
# Redis password only when Pulumi did not pass them in; the hand-off the VM is converged from passes both, so there
# the roles write secrets.env (always) from what they were given, and the other two files do not exist.
SECRET_FILES = (
    "/etc/ai-assistant/secrets.env",
    "/etc/ai-assistant/admin-token",
    "/etc/redis/ai-assistant.secret",
    "/etc/ai-assistant/probe-secret",  # the deploy gate's probe connector (ADR 0046): always generated on the host
)


def secret_digests(tvm: TestVM) -> dict[str, str]:
    done = tvm.ssh(f"cd / && sha256sum $(ls -d {' '.join(SECRET_FILES)} 2>/dev/null)")
    digests = {path: digest for digest, path in (line.split() for line in done.stdout.splitlines())}
    assert done.returncode == 0 and SECRET_FILES[0] in digests, f"no {SECRET_FILES[0]}: {done.stderr.strip()}"
    return digests


def pytest_configure(config: pytest.Config) -> None:
    # The VM's inventory comes from the Pulumi program under mocks (write_vm_handoff): pulumi-aws warns at import
    # about its own deprecated aliases, which the program does not use (as in tests/infra/conftest.py).
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """VM tests from every module share one converged VM; the few marked `vm_last` leave it in a state the others must
    not see (the runner's SSH connections throttled), so they run after all of them, whichever module they are in;
    among them, `vm_last(order=N)` runs after those of a lower N (default 0), each in collection order."""

    def rank(item: pytest.Item) -> tuple[bool, int]:
        marker = item.get_closest_marker("vm_last")
        return (marker is not None, int(marker.kwargs.get("order", 0)) if marker else 0)

    items.sort(key=rank)


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


def mitogen_env(check_host_keys: bool = False) -> dict[str, str]:
    """Environment that runs ansible-playbook's tasks through Mitogen's linear strategy (a test-runner speed-up only:
    the roles, modules and results are the same; see TestVM.play)."""
    import ansible_mitogen

    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {
        "ANSIBLE_STRATEGY_PLUGINS": str(plugins),
        "ANSIBLE_STRATEGY": "mitogen_linear",
        # Mitogen puts its own host-key options before the inventory's, and ssh takes the first: "False" would turn
        # off the hand-off's strict checking. An inventory without known keys (StrictHostKeyChecking=no) needs it.
        "ANSIBLE_HOST_KEY_CHECKING": str(check_host_keys),
        # Mitogen's connect timeout (Ansible's `timeout`, 10 s by default) covers the whole bootstrap: ssh through the
        # jump host, sudo, and its Python core sent to the guest and compiled there. Under emulation on a loaded machine
        # that took longer than 10 s (the renewal, egress and post-reboot plays failed with "Connection timed out").
        "ANSIBLE_TIMEOUT": "120",
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
    # Arguments every play gets before the playbook: the hand-off's 0600 secret vars file (`-e @secrets.json`).
    play_args: list[str] = field(default_factory=list)
    # The inventory pins host keys (the hand-off's known_hosts, checked strictly on both hops).
    checks_host_keys: bool = False
    # The bastion stand-in Ansible's SSH hops through (tests/roles/vm/jumphost.py).
    jump: JumpHost | None = None
    # The Pulumi config of the mocked stack the inventory came from (secrets left out).
    stack_config: dict[str, Any] = field(default_factory=dict)

    def _handed_over(self) -> dict[str, Any]:
        """The hand-off's 0600 vars file (`-e @file`), or {} where the VM was converged without one."""
        if "-e" not in self.play_args:
            return {}
        found: dict[str, Any] = json.loads(
            Path(self.play_args[self.play_args.index("-e") + 1].removeprefix("@")).read_text()
        )
        return found

    def secret_values(self) -> list[str]:
        """Every secret the hand-off passed to Ansible (values of 12+ characters), for scanning Ansible's output."""
        found = self._handed_over()
        return [self.connector_secret] + [
            v for k, v in found.items() if isinstance(v, str) and len(v) >= 12 and not k.endswith("_dir")
        ]

    def given_secret(self, name: str) -> str | None:
        """A secret the hand-off passed in its vars file (`redis_password`, ...); None where the roles generate it."""
        value = self._handed_over().get(name)
        return value if isinstance(value, str) else None

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command in the guest over the shared control connection (see _write_ssh_config)."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "testvm", command], capture_output=True, text=True, timeout=timeout
        )

    def private_address(self) -> str:
        """The guest's private IPv4 address (the source of its default route), where its links listen: what a
        cloud inventory's `ansible_host` would be (the harness reaches the guest on a forwarded loopback port)."""
        route = self.ssh("ip -4 -o route get 192.0.2.1")
        assert route.returncode == 0, route.stderr
        return route.stdout.split(" src ")[1].split()[0]

    def python(self, script: str, *argv: str, user: str | None = "ai-assistant", timeout: int = 240) -> str:
        """The deployed venv's Python running `script` (on stdin) with `argv`; its stdout. As the service user (the
        default) with the service's environment: secrets.env and the config and data directories. As root where
        `user` is None, in root's home (for a file a test put there). `timeout` bounds it inside the guest too, so
        a hung script cannot keep the shared ssh connection busy after the test has failed."""
        run = f"exec timeout {timeout} /opt/ai-assistant/venv/bin/python - {' '.join(argv)}"
        if user is not None:
            run = (
                f"runuser -u {user} -- sh -c 'set -a; . /etc/ai-assistant/secrets.env; set +a; "
                f"export AI_ASSISTANT_CONFIG_DIR=/etc/ai-assistant AI_ASSISTANT_DATA_DIR=/data/state; {run}'"
            )
        done = subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "testvm", run],
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def _mitogen_localhost(self) -> Path:
        """The controller as an explicit inventory host for Mitogen's plays. Mitogen runs a task delegated to
        localhost with the *inventory host's* `ansible_become` (the hand-off sets it for the admin user), so the
        roles' `become: false` controller tasks (the bundle check, the wheel check) would try sudo on the runner,
        which has none; Ansible's own strategy takes the delegated host's settings and needs no such entry."""
        path = self.workdir / "mitogen-localhost.yml"
        path.write_text(
            "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_become: false\n"
            '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        )
        return path

    def play(self, playbook: Path, *args: str, name: str, transport: str = "mitogen") -> PlayResult:
        """Run a playbook against the VM. `transport="ssh"` is Ansible's own SSH connection, the one operators and the
        hand-off use; the default runs the same modules through Mitogen, which keeps one Python interpreter in the guest
        instead of starting a new one per task (5-10 s a task under software emulation, ~0.3 s with Mitogen).
        ADR 0113 says which plays use which."""
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
        inventories = ["-i", str(self.inventory)]
        if transport == "mitogen":
            env |= mitogen_env(self.checks_host_keys)
            inventories += ["-i", str(self._mitogen_localhost())]
        elif transport != "ssh":
            raise ValueError(f"transport must be 'ssh' or 'mitogen', not {transport!r}")
        log = self.workdir / f"{name}.log"
        cmd = [str(VENV_BIN / "ansible-playbook"), *inventories, *self.play_args, str(playbook), *args]
        # Streamed to the log file so a slow converge can be followed while it runs.
        with log.open("w") as fh:
            # 50 min: the ssh-transport first converge took 20 min on a busy machine and 33 min on one shared by several
            # jobs; past this something is wrong, and CI (90 min) must still have time to report it.
            # stdin from /dev/null: Ansible refuses a non-blocking stdin, which an earlier ssh may leave behind.
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=3000
            )
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


# --- the VM's inventory: what the hand-off writes from a mocked `pulumi up` (issue 17) ------------------------------
#
# The Pulumi program runs under the mocks of tests/infra (the same code path as a real `up`), and
# infra.handoff.write_handoff_files turns its hand-off environment into the inventory, known_hosts and 0600 secret
# vars file the operator's `pulumi up` would give Ansible (infra/ansible_handoff.sh calls the same function). The IM
# connector the e2e test talks to exists only in this stack's Pulumi config, its secret only in imSecrets.

ALERTS_CHAT = "ops-alerts"
# Under TCG the VM's model (SmolLM2-135M) pays minutes for its first request and ~4.5 s for each later token it reads
# or writes (measured in the suite's guest, idle), and nothing else in the guest runs while it does. In the default
# knowledge_first mode each message is also embedded first (20-40 s for one query) and, with no document, the no-hit
# instruction adds ~35 prompt tokens: the first answer took 5-10 min and missed CI's 600 s wait.
# The VM's connectors answer in `general` mode: no retrieval, the same queue, worker, model server and reply path.
# Retrieval in the pipeline is tested outside the VM with the same model (tests/knowledge, tests/conversation); in the
# VM the backup drill ingests and searches with the CLI.
VM_ANSWER_MODE = "general"


def vm_stack_config(reply_port: int, admin_key: str) -> dict[str, Any]:
    """The mocked stack's Pulumi config (without secrets): the smallest tier, this VM's domain, one generic-IM
    connector whose replies go to the runner's receiver, and its alerts chat."""
    from tests.infra.harness import config_for

    return config_for(
        "aws",
        "basic",
        {
            "domain": DOMAIN,
            "sshPublicKey": admin_key,
            # No GPU host in the stack (the VM runs the local model: see harness_overrides).
            "inference": {"mode": "external", "url": "https://llm.example.com/v1"},
            "connectors": {
                "im-connector": {
                    "platform": "generic_im",
                    "app_id": "vm-test",
                    "webhook_url": f"https://{DOMAIN}/api/im/callback",
                    "reply_url": f"http://10.0.2.2:{reply_port}/replies",
                    "bot_name": "AI助理",
                    # No retrieval before the model (see VM_ANSWER_MODE).
                    "answer_mode": VM_ANSWER_MODE,
                }
            },
            "alerts": {"connector": "im-connector", "chatId": ALERTS_CHAT},
            "alertReceivers": [{"name": "ops", "email": "ops@assistant.test"}],
        },
    )


def harness_overrides(vm: VM) -> dict[str, Any]:
    """The only variables the harness sets over the hand-off's: what a cloud cannot give a VM under QEMU on the test
    runner. Each group says why; everything else is the mocked stack's."""
    slirp = ["10.0.2.2/32"]
    return {
        # Where the VM is: the runner's port forward to its sshd; the operator's key file (the stack's sshPublicKey).
        "ansible_host": "127.0.0.1",
        "ansible_port": vm.ports["ssh"],
        "ansible_ssh_private_key_file": str(vm.key),
        # slirp delivers every packet from the runner as 10.0.2.2: it is the bastion's subnet and the load balancer.
        "firewall_admin_cidrs": slirp,
        "firewall_lb_cidrs": slirp,
        "reverse_proxy_real_ip_from": slirp,
        # A monitoring host that is not the runner (folded onto one host, the stack's template would name the VM).
        "firewall_monitoring_cidrs": [MONITORING_CIDR, "2001:db8::99/128"],
        # One runner opens many test connections from one address: a looser SSH rate limit than the role's default.
        "firewall_ssh_rate_per_minute": 30,
        "firewall_ssh_burst": 10,
        # No public CA or cloud load balancer here: pebble in the VM (tests/roles/vm/prepare.yml) signs the site
        # certificate over ACME instead of the stack's internal CA behind the load balancer.
        "tls_mode": "acme",
        "tls_acme_server": "https://localhost:14000/dir",
        "tls_acme_ca_bundle": "/etc/pebble/ca.pem",
        "tls_acme_email": "ops@assistant.test",
        # No GPU host, managed Redis, Weaviate or S3 here: the local llama.cpp (its wheels and model from the
        # bundle), the data play's own Redis, the embedded knowledge store and no backup bucket (test_vm_backup.py
        # runs the backup role against a stand-in).
        "ai_assistant_inference_mode": "local",
        "model_server_threads": 2,
        "ai_assistant_redis": {},
        "ai_assistant_knowledge": {},
        "ai_assistant_weaviate_enabled": False,
        "ai_assistant_backup_bucket": "",
        # TCG emulates every instruction: each token the model writes is 4.5-27 s (VM_ANSWER_MODE), so answers are
        # a few words.
        "assistant_engine_max_tokens": 4,
        # A 3-token system prompt instead of the default's 21 (the first answer's prompt 20 tokens, not 38).
        "assistant_extra_settings": {"engine": {"system_prompt": "Be brief."}},
        # The model's first bytes come after the whole prompt is read: the first answer's prompt took 290-320 s at
        # load 3-4 here, for 38 tokens and for 20 alike (a first-request cost, not a per-token one); a CI runner has
        # been twice as slow.
        "assistant_engine_timeout_seconds": 900,
        # Grafana's package repository is offline; the fallback pager is a stand-in on the VM's loopback that
        # test_vm_production.py starts (Pulumi's alertReceivers take only https:// webhooks).
        "monitoring_grafana": False,
        "alertmanager_fallback_webhook_urls": ["http://127.0.0.1:9099/hook"],
    }


@dataclass
class Handoff:
    inventory: Path
    play_args: list[str]
    stack_config: dict[str, Any]
    user_data: dict[str, Any]  # the first assistant host's cloud-init document, as the stack declared it


def write_vm_handoff(
    workdir: Path, vm: VM, art: dict[str, Path], reply_port: int, secret: str, jump: JumpHost
) -> Handoff:
    """A mocked `pulumi up`, then the hand-off's files for it, folded onto the one VM and reached through `jump`."""
    from infra.handoff import write_handoff_files
    from infra.inventory import ssh_args
    from tests.infra.harness import run_program, unwrap

    admin_key = subprocess.run(["ssh-keygen", "-y", "-f", str(vm.key)], capture_output=True, text=True, check=True)
    config = vm_stack_config(reply_port, admin_key.stdout.strip())
    run = run_program(config, secrets={"imSecrets": {"im-connector": {"app_secret": secret}}})
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    first = sorted(yaml.safe_load(env["AI_ASSISTANT_INVENTORY"])["all"]["children"]["assistant"]["hosts"])[0]
    user_data = yaml.safe_load(run.one("aws:ec2/instance:Instance", first).props["userData"])
    # Pulumi would know both host keys (it generates them; cloud-init installs them): here the VM's is read over the
    # harness's own connection and the jump host's is the one the stand-in was given.
    vm_key = _as_root(vm, "cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert vm_key.returncode == 0 and vm_key.stdout.startswith("ssh-ed25519 "), vm_key.stderr
    known = (
        f"[127.0.0.1]:{vm.ports['ssh']} {' '.join(vm_key.stdout.split()[:2])}\n"
        f"[127.0.0.1]:{jump.port} {jump.host_key}\n"
    )
    files = write_handoff_files(
        env,
        workdir / "handoff",
        wheel=art["wheel"],
        wheelhouse=art["wheelhouse"],
        single_host="testvm",
        hostvars={"testvm": harness_overrides(vm)},
        known_hosts=known,
        # The stack's jump-host options (infra.inventory.ssh_args, strict: every key is known) for the stand-in's
        # address, port and user, with the operator's key for the inner hop (a real operator's ssh agent's job).
        ssh_common_args=ssh_args(jump.user, f"127.0.0.1 -p {jump.port} -i {vm.key}", keys_known=True),
    )
    return Handoff(files.inventory, ["-e", f"@{files.secret_vars}"], config, user_data)


def _as_root(vm: VM, command: str) -> subprocess.CompletedProcess[str]:
    """A command over the harness's own root connection, stdin from /dev/null (ssh would leave the test process's
    stdin non-blocking, which Ansible then refuses)."""
    return subprocess.run(
        [*vm.ssh_args(), command], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )


def first_boot(vm: VM, user_data: dict[str, Any]) -> None:
    """What the stack's cloud-init user data does at first boot (infra/cloudinit.py), done over the harness's own
    root connection because the image has no cloud-init: the admin account Ansible logs in with (its key, its sudo)
    and the data disk formatted with the label the volumes role finds it by. Read from the declared document, so a
    change to the user data reaches the VM."""
    from infra.config import ADMIN_USER

    admin = next(u for u in user_data["users"] if isinstance(u, dict) and u.get("name") == ADMIN_USER)
    label = user_data["fs_setup"][0]["label"]
    home = f"/home/{ADMIN_USER}"
    keys = "\n".join(admin["ssh_authorized_keys"])
    script = f"""set -e
id {ADMIN_USER} >/dev/null 2>&1 || useradd -m -s {admin["shell"]} -G {",".join(admin["groups"])} {ADMIN_USER}
install -d -m 700 -o {ADMIN_USER} -g {ADMIN_USER} {home}/.ssh
printf '%s\\n' '{keys}' > {home}/.ssh/authorized_keys
chown {ADMIN_USER}: {home}/.ssh/authorized_keys && chmod 600 {home}/.ssh/authorized_keys
echo '{ADMIN_USER} {admin["sudo"]}' > /etc/sudoers.d/90-cloud-init-users && chmod 440 /etc/sudoers.d/90-cloud-init-users
blkid /dev/disk/by-id/virtio-data01 >/dev/null || mkfs.ext4 -q -L {label} /dev/disk/by-id/virtio-data01
udevadm settle && test -e /dev/disk/by-label/{label}
"""
    done = _as_root(vm, script)
    assert done.returncode == 0, f"the first-boot stand-in failed: {done.stderr.strip()}"


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
    jump = JumpHost(keep / "jump", state["jump_port"], f"127.0.0.1:{vm.ports['ssh']}", pid=state["jump_pid"])
    if not jump.alive():
        jump.start(state["admin_key"])
        state["jump_pid"] = jump.pid
        state_file.write_text(json.dumps(state))
    tvm = TestVM(vm, keep, Path(state["inventory"]), keep / "ssh_config", receiver, state["secret"])
    tvm.generated_secrets, tvm.pebble_root = state["generated_secrets"], state["pebble_root"]
    tvm.play_args, tvm.checks_host_keys, tvm.jump = state["play_args"], True, jump
    tvm.stack_config = state["stack_config"]
    return tvm


def _keep_vm(keep: Path, tvm: TestVM, image: Path) -> None:
    assert tvm.vm.proc is not None and tvm.jump is not None
    admin_key = subprocess.run(["ssh-keygen", "-y", "-f", str(tvm.vm.key)], capture_output=True, text=True)
    state = {
        "image": str(image), "ports": tvm.vm.ports, "pid": tvm.vm.proc.pid, "reply_port": tvm.receiver.port,
        "secret": tvm.connector_secret, "generated_secrets": tvm.generated_secrets, "pebble_root": tvm.pebble_root,
        "inventory": str(tvm.inventory), "play_args": tvm.play_args, "stack_config": tvm.stack_config,
        "jump_port": tvm.jump.port, "jump_pid": tvm.jump.pid, "admin_key": admin_key.stdout.strip(),
    }  # fmt: skip
    (keep / "state.json").write_text(json.dumps(state))


@pytest.fixture(scope="session")
def test_vm(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[TestVM]:
    missing = missing_tools() + ([] if sshd_binary() else ["sshd (openssh-server: the jump host stand-in)"])
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
    # The one converge runs from `make bundle`'s archive (issue 22): built beside the image and the boot.
    bundle = airgap_proof.bundle_from_env()
    build = None if bundle else airgap_proof.start_build(workdir)
    image = _timed("image build (cached: ~0)", build_image, workdir / "build.log")
    receiver = ReplyReceiver()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver.secret = secret
    vm = VM(image, workdir / "vm")
    vm.prepare()
    vm.start()
    jump = JumpHost(workdir / "jump", free_port(), f"127.0.0.1:{vm.ports['ssh']}")
    try:
        _timed("boot", vm.wait_ssh)
        if build is not None:
            bundle = _timed("bundle (beyond the boot)", airgap_proof.unpacked, build, workdir)
        assert bundle is not None
        art = airgap_proof.artifacts(bundle)
        admin_key = subprocess.run(["ssh-keygen", "-y", "-f", str(vm.key)], capture_output=True, text=True, check=True)
        jump.start(admin_key.stdout)
        handoff = _timed("hand-off (mocked up)", write_vm_handoff, workdir, vm, art, receiver.port, secret, jump)
        first_boot(vm, handoff.user_data)
        tvm = TestVM(vm, workdir, handoff.inventory, _write_ssh_config(workdir, vm), receiver, secret)
        # The hand-off's secret vars file first (TestVM.secret_values reads it), then the bundle's, as an operator
        # passes them.
        tvm.play_args = [*handoff.play_args, *airgap_proof.play_args(bundle)]
        tvm.checks_host_keys, tvm.jump, tvm.stack_config = True, jump, handoff.stack_config
        # The admin account exists from first boot on, but pebble and the test domain come before the roles, and
        # as root: the stand-ins are not part of what the hand-off configures.
        prep = _timed(
            "prepare (pebble)", tvm.play, REPO / "tests/roles/vm/prepare.yml", "-e", "ansible_user=root", name="prepare"
        )
        assert prep.rc == 0, f"prepare.yml failed (log {prep.log}):\n{prep.tail()}"
        # From here on the guest reaches nothing but the runner (the controller, pebble's host port, the stand-ins):
        # the bundle is the only source of packages, wheels and the model.
        print(f"\nair-gapped proof: {airgap_proof.block_egress(tvm.ssh)}")
        # Through Mitogen, as every later play (ADR 0113: Ansible's ssh connection costs 5-10 s a task under
        # emulation, and converge 1 alone ran past 50 minutes on a busy CI machine); what the ssh connection does
        # differently is proven by test_vm.py::test_the_ssh_transport_moves_what_the_roles_move.
        # VM_FIRST_CONVERGE_TRANSPORT=ssh runs the whole first converge over ssh instead (20-50 min).
        transport = os.environ.get("VM_FIRST_CONVERGE_TRANSPORT", "mitogen")
        # At -vvv: every task's arguments and results are printed, and test_vm_production.py scans them for secrets.
        first = _timed(
            "converge 1", tvm.play, REPO / "playbooks/site.yml", "-vvv", name="converge1", transport=transport
        )
        assert first.rc == 0 and first.failed == 0, f"first converge failed (log {first.log}):\n{first.tail()}"
        tvm.generated_secrets = secret_digests(tvm)
        root = tvm.ssh("curl -sS --cacert /etc/pebble/ca.pem https://127.0.0.1:15000/roots/0")
        assert root.returncode == 0 and "BEGIN CERTIFICATE" in root.stdout, root.stderr
        tvm.pebble_root = root.stdout
        # lynis takes longer under emulation than the checks after it: it audits in the background from here on, at
        # the guest's idle priority, and test_vm_hardening.py reads its report at the end (vm/lynis_audit.py).
        if any("test_vm_hardening.py::test_lynis_hardening_index" in item.nodeid for item in request.session.items):
            lynis_audit.start(tvm.ssh)
        if keep is not None:
            _keep_vm(keep, tvm, image)
        yield tvm
    finally:
        if build is not None and build.poll() is None:
            build.kill()
        # A kept VM runs on only once its state is written (a failed first converge does not leave one behind).
        if keep is None or not (keep / "state.json").exists():
            vm.stop()
            jump.stop()
        receiver.close()
        console = vm.console
        if console.exists():
            shutil.copy(console, workdir / "console-final.log")


@pytest.fixture(scope="session")
def pebble_root(test_vm: TestVM) -> str:
    """The root that verifies the site certificate (see TestVM.pebble_root)."""
    return test_vm.pebble_root
