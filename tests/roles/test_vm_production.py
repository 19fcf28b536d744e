"""The production path on the one converged VM (issue 17): the tier's limits in the units, nginx believing the load
balancer for the client address, and alerts that arrive (the IM path over the private route, the Watchdog; the
fallback receiver while the assistant is down is checked during the restore drill's outage, test_vm_backup.py).

Read-mostly and without a re-converge: every expectation comes from the inventory the VM was converged with (read by
ansible-inventory, as Ansible read it): the one the hand-off writes from a mocked `pulumi up`
(infra.handoff.write_handoff_files, tests/roles/conftest.py). A check whose input the inventory does not give skips
and says which variable to set. The hand-off's path itself is checked last: through the jump host stand-in with host
keys checked, no secret in any play's output (the first converge ran at -vvv), the connectors from Pulumi config.
Stand-ins, as in tests/roles/test_vm.py: the reply receiver on the
runner for the IM platform.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra
import yaml

from tests.helpers import wait_until
from tests.roles.conftest import DOMAIN, REPO, TestVM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900, func_only=True)]

VENV_BIN = Path(sys.executable).parent
# slirp delivers every packet from the test runner as this address: to the VM it is the load balancer.
RUNNER = ipaddress.ip_address("10.0.2.2")


@pytest.fixture(scope="module")
def host(test_vm: TestVM) -> Any:
    return testinfra.get_host("ssh://testvm", ssh_config=str(test_vm.ssh_config))


def assistant_hostvars(test_vm: TestVM) -> dict[str, Any]:
    """The assistant host's variables as Ansible sees them in the inventory the VM was converged with."""
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(test_vm.inventory), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    name = sorted(parsed["assistant"]["hosts"])[0]
    found: dict[str, Any] = parsed["_meta"]["hostvars"][name]
    return found


@pytest.fixture(scope="module")
def hostvars(test_vm: TestVM) -> dict[str, Any]:
    return assistant_hostvars(test_vm)


def https(test_vm: TestVM, root_pem: str) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=root_pem)
    return httpx.Client(
        base_url=f"https://127.0.0.1:{test_vm.vm.ports['https']}",
        verify=ctx,
        headers={"host": DOMAIN},
        timeout=30,
        event_hooks={"request": [lambda request: request.extensions.update(sni_hostname=DOMAIN)]},
    )


def _run(host: Any, command: str) -> str:
    out = host.run(command)
    assert out.rc == 0, f"{command}: {out.stderr}"
    return str(out.stdout).strip()


# --- the tier reaches the host -------------------------------------------------------------------------------------


def test_the_tiers_memory_limits_and_workers_reach_the_running_units(host: Any, hostvars: dict[str, Any]) -> None:
    for unit, var in (("ai-assistant", "assistant_memory_max_mib"), ("nginx", "reverse_proxy_memory_max_mib")):
        mib = int(hostvars.get(var, 0))
        want = str(mib * 1024 * 1024) if mib > 0 else "infinity"
        assert _run(host, f"systemctl show -p MemoryMax --value {unit}") == want, f"{unit}: MemoryMax ({var}={mib})"
        # The running service's cgroup, not only the unit file: a drop-in without daemon-reload would not be here.
        cgroup = _run(host, f"cat /sys/fs/cgroup/system.slice/{unit}.service/memory.max")
        assert cgroup == (want if mib > 0 else "max"), f"{unit}: cgroup memory.max is {cgroup}"
    settings = yaml.safe_load(_run(host, "cat /etc/ai-assistant/assistant.yaml"))
    assert settings["worker"]["concurrency"] == int(hostvars.get("assistant_worker_concurrency", 2))


def test_nginx_takes_the_client_address_from_the_load_balancer(
    test_vm: TestVM, host: Any, hostvars: dict[str, Any], pebble_root: str
) -> None:
    trusted = [ipaddress.ip_network(c) for c in hostvars.get("reverse_proxy_real_ip_from", [])]
    if not any(RUNNER in net for net in trusted):
        pytest.skip("reverse_proxy_real_ip_from does not hold 10.0.2.2/32 (the runner, the VM's load balancer)")
    probe = uuid.uuid4().hex
    with https(test_vm, pebble_root) as client:
        r = client.get(f"/readyz?probe={probe}", headers={"x-forwarded-for": "198.51.100.77"})
    assert r.status_code == 200, r.text
    line = wait_until(
        lambda: host.run(f"grep -h {probe} /var/log/nginx/access.log").stdout.strip(), 30, "the request in the log"
    )
    assert line.startswith("198.51.100.77 "), f"nginx logged {line!r}: it did not believe the load balancer"


# --- alerts that arrive ----------------------------------------------------------------------------------------------


def test_alertmanager_routes_the_watchdog_and_the_outage_page(host: Any, hostvars: dict[str, Any]) -> None:
    def route(*labels: str) -> str:
        return _run(
            host, "amtool config routes test --config.file=/etc/prometheus/alertmanager.yml " + " ".join(labels)
        )

    assert route("alertname=Watchdog", "severity=none") == "watchdog"
    fallback = hostvars.get("alertmanager_fallback_webhook_urls") or hostvars.get("alertmanager_email_to")
    assert route("alertname=AIAssistantDown", "severity=critical") == ("fallback" if fallback else "team-im")
    # The Watchdog is always firing: Alertmanager holds it (Prometheus resends within a minute of starting).
    wait_until(
        lambda: json.loads(
            _run(host, "curl -sf 'http://127.0.0.1:9093/api/v2/alerts?filter=alertname%3D%22Watchdog%22'")
        ),
        150,
        "the Watchdog in Alertmanager",
        interval=5,
    )


def test_a_firing_alert_reaches_the_im_stand_in_over_the_private_path(
    test_vm: TestVM, host: Any, hostvars: dict[str, Any]
) -> None:
    """Alertmanager -> its IM receiver (the assistant's /api/alerts on the private path) -> the alerts connector ->
    the IM stand-in. The alert enters through Alertmanager's API as Prometheus would send it (amtool alert add): a
    rule that fires on demand would need minutes of failing traffic under emulation."""
    chat = hostvars.get("assistant_alerts_chat_id")
    if not (chat and hostvars.get("assistant_alerts_connector")):
        pytest.skip("no alerts chat in the inventory (assistant_alerts_connector, assistant_alerts_chat_id)")
    name = f"VMAlertPathProbe{uuid.uuid4().hex[:6]}"
    _run(
        host,
        f"amtool alert add --alertmanager.url=http://127.0.0.1:9093 alertname={name} severity=warning "
        "service=ai-assistant --annotation=summary='The alert path probe' --annotation=description='From the VM test'",
    )

    def posted() -> list[dict[str, Any]]:
        return [r for r in test_vm.receiver.received if r.get("chat_id") == chat and name in r.get("text", "")]

    got = wait_until(posted, 180, f"{name} in chat {chat}", interval=2)
    assert got[0]["text"].startswith(f"[FIRING] warning: {name}"), got[0]["text"]


# --- the hand-off converged the VM (issue 17): through the jump host, host keys checked, no secret in any output ----


def _ansible_ping(test_vm: TestVM, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`ansible -m ping` with the hand-off's inventory over Ansible's own ssh transport, in a fresh ControlPath
    directory so that no multiplexed connection from an earlier play skips the host-key check."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
    }
    cmd = [
        str(VENV_BIN / "ansible"),
        "all",
        "-i",
        str(test_vm.inventory),
        *test_vm.play_args,
        "-m",
        "ansible.builtin.ping",
    ]
    return subprocess.run(
        [*cmd, *extra], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )


def test_ansible_reaches_the_vm_only_through_the_jump_host_with_pinned_keys(
    test_vm: TestVM, hostvars: dict[str, Any], tmp_path: Path
) -> None:
    """The inventory's ssh options are the stack's (infra.inventory.ssh_args: a ProxyCommand through the bastion,
    StrictHostKeyChecking=yes on both hops against the hand-off's known_hosts); the jump host stand-in logged the
    converges' logins; and a known_hosts with another key for the VM stops Ansible before it logs in."""
    if test_vm.jump is None:
        pytest.skip("the VM was converged without the hand-off's jump host")
    args = hostvars["ansible_ssh_common_args"]
    assert "ProxyCommand='ssh " in args and f"-p {test_vm.jump.port}" in args, args
    assert args.count("StrictHostKeyChecking=yes") == 2 and "StrictHostKeyChecking=no" not in args, args
    assert hostvars["ansible_user"] != "root" and hostvars["ansible_become"] is True
    assert test_vm.jump.accepted_logins() > 0, f"no login through the jump host (log {test_vm.jump.log})"
    logins = test_vm.ssh(
        f"journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey for {hostvars['ansible_user']} '"
    )
    assert int(logins.stdout.strip() or 0) > 0, "the VM's sshd saw no login of the stack's admin user"

    before = test_vm.jump.accepted_logins()
    good = _ansible_ping(test_vm, tmp_path / "good")
    assert good.returncode == 0 and "ping: pong" in good.stdout, good.stdout[-2000:] + good.stderr[-2000:]
    assert test_vm.jump.accepted_logins() > before, "the ping did not go through the jump host"

    known = Path(hostvars["ai_assistant_known_hosts"]).read_text().splitlines()
    vm_line = next(line for line in known if line.startswith(f"[127.0.0.1]:{test_vm.vm.ports['ssh']} "))
    other_key = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], capture_output=True
    )
    assert other_key.returncode == 0
    wrong = tmp_path / "known_hosts"
    forged = vm_line.split()[0] + " " + " ".join((tmp_path / "other.pub").read_text().split()[:2])
    wrong.write_text("\n".join(forged if line == vm_line else line for line in known) + "\n")
    bad = _ansible_ping(test_vm, tmp_path / "bad", "-e", f"ai_assistant_known_hosts={wrong}")
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "UNREACHABLE" in out, out[-2000:]
    assert "Host key verification failed" in out or "HOST IDENTIFICATION HAS CHANGED" in out, out[-2000:]


def test_no_secret_in_any_ansible_output_on_the_hand_off_path(test_vm: TestVM) -> None:
    """Every play the suite ran against the VM so far, the first converge at -vvv (each task's arguments and
    results printed) included: no secret the hand-off passed (its 0600 vars file, the connector's app secret from
    Pulumi's imSecrets), nor the probe secret the roles generate, appears in any of their output."""
    logs = sorted(test_vm.workdir.glob("*.log"))
    converge = test_vm.workdir / "converge1.log"
    assert converge in logs, "no log of the first converge"
    text = converge.read_text(errors="replace")
    # -vvv: Ansible names the file of every task and prints every result ("task path:" needs at least -vv).
    assert text.count("task path: ") > 100, "the first converge did not run at -vvv"
    values = test_vm.secret_values()
    assert len(values) >= 6, "the hand-off's secrets were not found"
    # The one secret the roles generate on this path (the hand-off passes the others): the deploy gate's probe secret.
    probe = test_vm.ssh("sudo cat /etc/ai-assistant/probe-secret")
    assert probe.returncode == 0 and len(probe.stdout.strip()) >= 12, f"no probe secret: {probe.stderr.strip()}"
    values.append(probe.stdout.strip())
    leaks = [
        f"{log.name}: {value[:4]}..." for log in logs for value in values if value in log.read_text(errors="replace")
    ]
    assert not leaks, f"secret values in Ansible output: {leaks}"


def test_the_connector_comes_from_the_stacks_pulumi_config_only(test_vm: TestVM, host: Any) -> None:
    """The assistant's connectors are exactly those of the mocked stack's Pulumi config; the harness's inventory
    overrides name none (the signed-message test answers a message for this connector)."""
    stack = test_vm.stack_config.get("connectors")
    if not stack:
        pytest.skip("the VM was not converged from a mocked stack's hand-off")
    from tests.roles.conftest import harness_overrides

    overrides = harness_overrides(test_vm.vm)
    assert not [k for k in overrides if "connector" in k], "the harness sets a connector variable"
    on_host = yaml.safe_load(_run(host, "cat /etc/ai-assistant/connectors.yaml"))
    # Besides the stack's: the role's own loopback-only probe for the deploy gate (assistant_deploy_probe).
    assert on_host.pop("deploy_probe", {}).get("platform") == "probe", "the deploy gate's probe connector is missing"
    assert set(on_host) == set(stack), f"connectors on the host {sorted(on_host)} != the stack's {sorted(stack)}"
    for name, options in stack.items():
        assert {k: on_host[name][k] for k in options} == options, name
