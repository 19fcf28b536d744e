"""site.yml on a real Debian 12 VM (QEMU): converge, converge again with no change, check mode, then behaviour.

Stand-ins, because the real thing cannot exist here: pebble (Debian's ACME test server, inside the VM) for Let's
Encrypt, and a reply receiver on the test runner for the IM platform. Everything else is the real package, kernel,
systemd unit and network path: the HTTPS request goes host -> QEMU port forward -> nftables -> nginx -> assistant ->
Redis + llama.cpp, and the answer comes back as a signed POST to the runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import ssl
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra

from tests.helpers import message, signed_generic_request, wait_until
from tests.roles.conftest import DOMAIN, REPO, TIMINGS, TestVM, secret_digests
from tests.roles.vm import airgap_proof

# Converging under software emulation takes many minutes: far above the suite-wide 900 s per test. func_only: the
# module fixture's first converge (up to 30 min under load) has its own limit in TestVM.play, not this one.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(2700, func_only=True)]


@pytest.fixture(scope="module")
def host(test_vm: TestVM) -> Any:
    return testinfra.get_host("ssh://testvm", ssh_config=str(test_vm.ssh_config))


def https(test_vm: TestVM, root_pem: str) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=root_pem)
    return httpx.Client(
        base_url=f"https://127.0.0.1:{test_vm.vm.ports['https']}",
        verify=ctx,
        headers={"host": DOMAIN},
        timeout=30,
        # httpx takes extensions per request, not per client: the hook names the site in every TLS hello, since the
        # URL holds the forwarded loopback address.
        event_hooks={"request": [lambda request: request.extensions.update(sni_hostname=DOMAIN)]},
    )


def probe(port: int, wait: float = 6.0) -> str:
    """'answered' (bytes came back), 'closed' (refused/reset in the guest) or 'silent' (dropped: nothing came back).

    QEMU's port forward accepts the host-side connection itself, so a drop in the guest shows up as silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.settimeout(wait)
        try:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = s.recv(64)
        except TimeoutError:
            return "silent"
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
    return "answered" if data else "closed"


# --- convergence ---------------------------------------------------------------------------------------------------


def test_second_converge_changes_nothing(test_vm: TestVM) -> None:
    start = time.monotonic()
    second = test_vm.play(REPO / "playbooks/site.yml", name="converge2")
    TIMINGS["converge 2"] = time.monotonic() - start
    assert second.rc == 0, f"second converge failed (log {second.log}):\n{second.tail()}"
    assert second.changed == 0, f"second converge changed {second.changed} task(s): {second.changed_tasks()}"


def test_rerunning_the_roles_keeps_generated_secrets(test_vm: TestVM) -> None:
    """Issue 9: the secret files the first run wrote (secrets.env; the admin token and the Redis ACL password where
    the roles generated them, i.e. without the hand-off's) survive the second converge (which
    test_second_converge_changes_nothing has run by now) byte for byte."""
    assert test_vm.generated_secrets, "digests were taken after the first converge"
    assert secret_digests(test_vm) == test_vm.generated_secrets


def test_check_mode_on_converged_host_changes_nothing(test_vm: TestVM) -> None:
    start = time.monotonic()
    check = test_vm.play(REPO / "playbooks/site.yml", "--check", name="check")
    TIMINGS["check mode"] = time.monotonic() - start
    assert check.rc == 0, f"check mode failed (log {check.log}):\n{check.tail()}"
    assert check.changed == 0, f"check mode would change: {check.changed_tasks()}"


def test_the_ssh_transport_moves_what_the_roles_move(test_vm: TestVM, tmp_path: Path) -> None:
    """The converges run through Mitogen (ADR 0113); this play runs over Ansible's own ssh connection, on the
    hand-off's inventory (admin user, sudo, the jump host, pinned host keys), each connection-dependent thing the
    roles do (vm/ssh-transport.yml; test_ssh_transport_static.py keeps that list whole). Twice: the second run
    changes nothing, as a converge's second run must not."""
    src = tmp_path / "src"
    (src / "tree").mkdir(parents=True)
    blob = secrets.token_bytes(3 * 1024 * 1024 + 17)  # over one transfer chunk, not a multiple of one
    (src / "blob.bin").write_bytes(blob)
    (src / "proof.conf.j2").write_text("host={{ inventory_hostname }}\nuser={{ ansible_user }}\n")
    (src / "tree" / "one.txt").write_text("one\n")
    (src / "tree" / "two.txt").write_text("two\n")
    with tarfile.open(src / "tree.tar", "w") as tar:
        tar.add(src / "tree", arcname="tree")
    (src / "proof.py").write_text(
        "import os, pathlib, sys\npathlib.Path(sys.argv[1], 'script-ran').write_text(f'{os.getuid()}\\n')\n"
    )
    proof = REPO / "tests/roles/vm/ssh-transport.yml"
    d = "/var/tmp/ssh-transport-proof"  # the play's scratch directory (__proof_dir)
    try:
        args = ("-e", f"ssh_transport_src={src}")
        first = test_vm.play(proof, *args, "-vvv", name="ssh-transport", transport="ssh")
        assert first.rc == 0 and first.failed == 0, f"the ssh play failed (log {first.log}):\n{first.tail()}"
        # -vvv names the connection: Ansible's ssh plugin (Mitogen logs no such line), through the jump host.
        assert "ESTABLISH SSH CONNECTION FOR USER: ansible" in first.output, "the play did not run over ssh"
        assert "ProxyCommand=ssh" in first.output, "the play's ssh did not go through the jump host"
        assert first.changed >= 7, f"the first ssh play changed only {first.changed_tasks()}"
        digest = test_vm.ssh(f"sudo sha256sum {d}/blob.bin && sudo stat -c '%U %a' {d}/blob.bin {d}/proof.conf")
        assert digest.returncode == 0, digest.stderr
        assert digest.stdout.split()[0] == hashlib.sha256(blob).hexdigest(), "the copied file differs"
        assert "root 600" in digest.stdout and "root 640" in digest.stdout, digest.stdout
        files = test_vm.ssh(
            f"sudo cat {d}/proof.conf {d}/tree/one.txt {d}/synced/two.txt {d}/script-ran {d}/handler-ran"
            f" {d}/controller-uid"
        )
        assert files.returncode == 0, files.stderr
        lines = files.stdout.splitlines()
        assert lines[0].startswith("host=") and len(lines[0]) > 5 and lines[1] == "user=ansible", lines
        assert lines[2:4] == ["one", "two"], lines
        # The script ran as root through sudo; the delegated task as the runner's user, without sudo.
        assert lines[4] == "0" and lines[5] == "handled" and lines[6] == str(os.getuid()), lines
        again = test_vm.play(proof, *args, name="ssh-transport-2", transport="ssh")
        assert again.rc == 0 and again.changed == 0, f"the second ssh play changed {again.changed_tasks()}"
    finally:
        test_vm.ssh(f"sudo rm -rf {d}")


# --- base --------------------------------------------------------------------------------------------------------


def test_the_converge_ran_air_gapped_from_the_bundle(test_vm: TestVM, host: Any) -> None:
    """Issue 22: the one converge ran with the guest's egress blocked (tests/roles/vm/airgap_proof.py) and the
    bundle's signed repository as apt's only source; the block outlived the firewall role's reloads."""
    assert airgap_proof.still_blocked(test_vm.ssh), "the guest reaches its Debian mirror: the egress block is gone"
    sites = host.run("apt-get indextargets --format '$(SITE)' | sort -u").stdout.split()
    assert sites, "apt knows no package source"
    assert all(site.startswith("file:/var/lib/ai-assistant-bundle/") for site in sites), sites


def test_service_accounts_have_no_login_shell(host: Any) -> None:
    for name in ("ai-assistant", "model-server"):
        user = host.user(name)
        assert user.exists and user.shell == "/usr/sbin/nologin"
        assert host.check_output(f"passwd -S {name}").split()[1] == "L"  # locked: no password login


def test_sshd_accepts_keys_only(host: Any) -> None:
    effective = host.check_output("sshd -T -C user=root,host=x,addr=10.0.2.2")
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "permitrootlogin without-password" in effective  # sshd's name for prohibit-password
    assert "authenticationmethods publickey" in effective


def test_time_sync_and_unattended_upgrades(host: Any) -> None:
    assert host.service("systemd-timesyncd").is_enabled
    assert host.service("systemd-timesyncd").is_running
    auto = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'Unattended-Upgrade "1"' in auto
    assert "-security" in host.file("/etc/apt/apt.conf.d/52unattended-upgrades-ai-assistant").content_string


def test_sysctl_hardening_is_live(host: Any) -> None:
    assert host.sysctl("kernel.kptr_restrict") == 2
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.tcp_syncookies") == 1


def test_auditd_watches_config_and_secrets(host: Any) -> None:
    rules = host.check_output("auditctl -l").splitlines()
    # auditctl lists a directory watch as a dir= syscall rule, a file watch as -w.
    assert any("/etc/ai-assistant" in r and "assistant_config" in r for r in rules), rules
    assert any("/etc/ssh/sshd_config" in r and "sshd_config" in r and "wa" in r for r in rules), rules
    assert host.service("auditd").is_running and host.service("auditd").is_enabled


def test_a_write_under_a_watch_leaves_an_audit_record(host: Any) -> None:
    # Creating a file in the watched directory is a write: it leaves an audit record under the key, naming the file
    # (the rule load's CONFIG_CHANGE record carries the key too, so the search names the probe). --input-logs: without
    # a terminal ausearch reads its records from stdin, and over ssh that is empty.
    # This failed until the base role set journald's Audit=yes: Debian 12's journald defaults to Audit=no, which
    # switches kernel auditing off whenever journald (re)starts, as the base role's journald handler does.
    probe = f"/etc/ai-assistant/.audit-probe-{uuid.uuid4().hex[:8]}"
    assert host.run(f"echo probe > {probe} && rm {probe}").rc == 0
    search = f"ausearch --input-logs -k assistant_config -f {probe} --just-one"
    wait_until(lambda: host.run(search).rc == 0, 30, f"an assistant_config audit record for {probe}", 1)


def test_journal_is_capped(host: Any) -> None:
    conf = host.file("/etc/systemd/journald.conf.d/60-ai-assistant.conf").content_string
    assert "SystemMaxUse=500M" in conf


# --- firewall ----------------------------------------------------------------------------------------------------


def test_ruleset_denies_inbound_by_default(host: Any) -> None:
    ruleset = host.check_output("nft list ruleset")
    assert "table inet filter" in ruleset  # one inet table: the same policy for IPv4 and IPv6
    assert "hook input priority filter; policy drop;" in ruleset
    assert "hook forward priority filter; policy drop;" in ruleset
    assert "tcp dport 22 ip saddr @admin4" in ruleset and "limit rate over 30/minute burst 10 packets" in ruleset
    assert "tcp dport 443 ip saddr @lb4 accept" in ruleset
    assert "ip6 saddr @monitoring6" in ruleset  # the IPv6 monitoring address got its own set and rule
    assert "tcp dport 80 " not in ruleset  # ACME disabled in this inventory: 80 stays closed


def test_https_is_open_to_the_load_balancer(test_vm: TestVM) -> None:
    assert probe(test_vm.vm.ports["https"]) in ("answered", "closed")  # TLS server answers or resets a plain GET


def test_metrics_port_is_dropped_from_outside_but_listening(test_vm: TestVM, host: Any) -> None:
    # Inside the VM the port serves metrics ...
    assert "ai_assistant" in host.check_output("curl -sS http://127.0.0.1:9464/metrics")
    # ... from the runner (10.0.2.2, not the monitoring host) the packets are dropped.
    assert probe(test_vm.vm.ports["metrics"]) == "silent"


def test_http_is_dropped_when_acme_is_not_allowed(test_vm: TestVM, host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert probe(test_vm.vm.ports["http"]) == "silent"


# --- volumes -----------------------------------------------------------------------------------------------------


def test_data_disk_is_mounted_by_label_with_safe_options(host: Any) -> None:
    mount = host.mount_point("/data")
    assert mount.exists and mount.filesystem == "ext4"
    assert {"nodev", "nosuid", "noexec"} <= set(mount.options)
    assert "LABEL=aidata /data ext4" in host.file("/etc/fstab").content_string
    assert host.check_output("readlink -f /dev/disk/by-label/aidata") == host.check_output(
        "readlink -f /dev/disk/by-id/virtio-data01"
    )
    assert host.file("/data/state").user == "ai-assistant"
    assert host.file("/data/models").user == "model-server"
    assert host.file("/data/backups").mode == 0o700


# --- redis -------------------------------------------------------------------------------------------------------


def test_redis_persists_and_requires_the_acl_password(host: Any, test_vm: TestVM) -> None:
    assert host.socket("tcp://127.0.0.1:6379").is_listening
    assert not host.socket("tcp://0.0.0.0:6379").is_listening
    assert "NOAUTH" in host.run("redis-cli ping").stdout + host.run("redis-cli ping").stderr
    assert host.run("redis-cli --user default --pass x ping 2>&1").stdout.strip() != "PONG"
    assert host.file("/data/redis/appendonlydir").is_directory
    # Pulumi's redis_password when the hand-off passed one (the CI path), else the one the role generated.
    secret = test_vm.given_secret("redis_password")
    if secret is None:
        secret = host.check_output("cat /etc/redis/ai-assistant.secret")
        assert len(secret) == 40 and host.file("/etc/redis/ai-assistant.secret").mode == 0o600
    acl = host.check_output("cat /etc/redis/users.acl")
    assert secret not in acl  # only its SHA-256 is stored
    as_assistant = f"redis-cli --no-auth-warning --user ai-assistant --pass '{secret}' ping"
    assert host.check_output(as_assistant) == "PONG"
    # The backup job's user: BGSAVE yes, reading or writing the assistant's data no (least privilege).
    backup = host.check_output("cat /etc/redis/backup.secret")
    assert len(backup) == 40 and backup not in host.check_output("cat /etc/redis/users.acl")
    as_backup = "redis-cli --no-auth-warning --user backup --pass " + backup
    assert host.check_output(f"{as_backup} lastsave").isdigit()
    assert "NOPERM" in host.run(f"{as_backup} get aia:anything 2>&1").stdout


# --- assistant and model server ------------------------------------------------------------------------------------


def test_services_run_under_their_accounts(host: Any) -> None:
    for unit, user in (("ai-assistant", "ai-assistant"), ("model-server", "model-server")):
        svc = host.service(unit)
        assert svc.is_enabled and svc.is_running
        assert host.check_output(f"systemctl show -P User {unit}") == user
        assert host.check_output(f"systemctl show -P NoNewPrivileges {unit}") == "yes"
        assert host.check_output(f"systemctl show -P ProtectSystem {unit}") == "strict"
    assert host.socket("tcp://127.0.0.1:8089").is_listening
    assert not host.socket("tcp://0.0.0.0:8089").is_listening


def test_secrets_stay_out_of_config_and_logs(host: Any, test_vm: TestVM) -> None:
    env = host.file("/etc/ai-assistant/secrets.env")
    assert env.mode == 0o600 and env.user == "ai-assistant"
    connectors = host.file("/etc/ai-assistant/connectors.yaml").content_string
    assert test_vm.connector_secret not in connectors
    assert "${AI_ASSISTANT_SECRET_IM_CONNECTOR_APP_SECRET}" in connectors
    token = test_vm.given_secret("assistant_admin_token") or host.check_output("cat /etc/ai-assistant/admin-token")
    journal = host.check_output("journalctl --no-pager -o cat")
    assert token not in journal and test_vm.connector_secret not in journal
    assert token not in (test_vm.workdir / "converge1.log").read_text()
    assert test_vm.connector_secret not in (test_vm.workdir / "converge1.log").read_text()


def test_readyz_through_nginx_with_the_acme_certificate(test_vm: TestVM, pebble_root: str) -> None:
    with https(test_vm, pebble_root) as client:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.headers["strict-transport-security"].startswith("max-age=63072000")
        assert r.extensions["http_version"] in (b"HTTP/1.1", b"HTTP/2")
        stream = r.extensions.get("network_stream")
        if stream is not None:
            assert stream.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")


def test_certificate_names_the_domain_and_chains_to_pebble(test_vm: TestVM, pebble_root: str) -> None:
    ctx = ssl.create_default_context(cadata=pebble_root)
    with (
        socket.create_connection(("127.0.0.1", test_vm.vm.ports["https"]), timeout=20) as raw,
        ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls,  # verifies chain and host name
    ):
        cert = tls.getpeercert()
    issuer = dict(x[0] for x in cert["issuer"])
    assert "Pebble" in issuer["commonName"]
    assert ("DNS", DOMAIN) in cert["subjectAltName"]


def test_unknown_names_get_no_certificate(test_vm: TestVM, pebble_root: str) -> None:
    ctx = ssl.create_default_context(cadata=pebble_root)
    with (
        socket.create_connection(("127.0.0.1", test_vm.vm.ports["https"]), timeout=20) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw, server_hostname="other.test")


def test_routes_limits_and_allowlists(test_vm: TestVM, pebble_root: str) -> None:
    with https(test_vm, pebble_root) as client:
        assert client.get("/metrics").status_code == 404  # never public
        assert client.get("/admin/knowledge").status_code == 403  # not an admin network
        assert client.get("/api/im/callback").status_code == 403  # webhooks are POST only
        assert client.get("/somewhere-else").status_code == 404
        big = client.post("/api/im/callback", content=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413


def test_unsigned_webhook_is_rejected_with_json(test_vm: TestVM, pebble_root: str) -> None:
    body = json.dumps(message("unsigned-1")).encode()
    with https(test_vm, pebble_root) as client:
        r = client.post("/api/im/callback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")


def test_signed_message_over_https_is_answered_by_the_local_model(test_vm: TestVM, pebble_root: str) -> None:
    """For the connector that exists only in the mocked stack's Pulumi config, signed with its app secret from
    Pulumi's imSecrets (tests/roles/conftest.py, vm_stack_config)."""
    assert not test_vm.stack_config or "im-connector" in test_vm.stack_config["connectors"]
    event_id = f"vm-{uuid.uuid4().hex[:8]}"
    raw, headers = signed_generic_request(
        message(event_id, "Say hello.", chat_id="vm-chat"), secret=test_vm.connector_secret
    )
    with https(test_vm, pebble_root) as client:
        r = client.post("/api/im/callback", content=raw, headers=headers)
    assert r.status_code == 200, r.text
    start = time.monotonic()
    replies = wait_until(lambda: test_vm.receiver.for_event(event_id), 1200, f"the reply to {event_id}", interval=1)
    TIMINGS["e2e answer"] = time.monotonic() - start
    assert replies[0]["chat_id"] == "vm-chat"
    assert replies[0]["text"].strip()
    assert test_vm.receiver.rejected == 0


def test_container_roles_pass_check_mode(test_vm: TestVM) -> None:
    """TGI and Weaviate cannot start here (no registry, no GPU): check mode against the real VM is as far as they go."""
    check = test_vm.play(REPO / "tests/roles/vm/containers-check.yml", "--check", name="containers-check")
    assert check.rc == 0 and check.failed == 0, (
        f"container roles failed in check mode (log {check.log}):\n{check.tail()}"
    )
    assert check.changed > 0  # a fresh host: podman, units and env files would be written


# --- monitoring (roles and checks by the monitoring part of the repository) -------------------------------------


def test_monitoring_roles_on_the_vm(host: Any) -> None:
    from tests.monitoring.vm_checks import check_alertmanager, check_node_exporter, check_prometheus

    check_node_exporter(host)
    check_prometheus(host)
    check_alertmanager(host)


def test_node_exporter_is_dropped_from_outside(test_vm: TestVM, host: Any) -> None:
    assert "node_uname_info" in host.check_output("curl -sS http://127.0.0.1:9100/metrics")
    assert probe(test_vm.vm.ports["node"]) == "silent"


# --- reboot and re-run -----------------------------------------------------------------------------------------------


# order=1: after the lynis audit that runs in the background since converge 1 (test_vm_hardening.py) has been read.
@pytest.mark.vm_last(order=1)
def test_data_survives_a_reboot_and_a_rerun_does_not_reformat(test_vm: TestVM, host: Any) -> None:
    marker = uuid.uuid4().hex
    assert host.run(f"echo {marker} > /data/backups/marker && sync").rc == 0
    start = time.monotonic()
    test_vm.ssh("systemctl reboot", timeout=30)
    time.sleep(5)
    test_vm.vm.wait_ssh(600)
    TIMINGS["reboot"] = time.monotonic() - start
    # A fresh testinfra connection: the old control socket died with the reboot.
    after = testinfra.get_host("ssh://testvm", ssh_config=str(test_vm.ssh_config))
    assert after.mount_point("/data").exists
    assert after.file("/data/backups/marker").content_string.strip() == marker
    rerun = test_vm.play(REPO / "playbooks/site.yml", "--tags", "volumes", name="volumes-rerun")
    assert rerun.rc == 0 and rerun.changed == 0, rerun.tail()
    assert after.file("/data/backups/marker").content_string.strip() == marker
    assert after.service("ai-assistant").is_running and after.service("nftables").is_enabled
    assert "policy drop" in after.check_output("nft list chain inet filter input")


def test_volumes_refuses_a_disk_that_holds_another_filesystem(test_vm: TestVM) -> None:
    # The root disk holds ext4; asking for xfs on it must stop before anything is written.
    bad = test_vm.play(
        REPO / "playbooks/site.yml",
        "--tags",
        "volumes",
        "-e",
        "volumes_data_device=/dev/disk/by-label/root volumes_fs_type=xfs volumes_fs_label=other",
        name="volumes-refuse",
    )
    assert bad.rc != 0
    assert "already holds ext4" in bad.output and "refusing to format it as xfs" in bad.output


@pytest.mark.vm_last(order=2)
def test_ssh_new_connections_are_rate_limited(test_vm: TestVM) -> None:
    """Runs last (vm_last, after the other vm_last tests): it leaves the runner's address throttled for a minute."""
    outcomes = []
    for _ in range(40):
        try:
            with socket.create_connection(("127.0.0.1", test_vm.vm.ports["ssh"]), timeout=5) as s:
                s.settimeout(3)
                outcomes.append(s.recv(16).startswith(b"SSH-"))
        except (TimeoutError, OSError):
            outcomes.append(False)
        # A refusal after a banner: the limit is seen (each refusal costs its 3-5 s timeout; all 40 took a minute).
        if True in outcomes and not outcomes[-1]:
            break
    assert any(outcomes), "no SSH banner at all: sshd or the admin allowlist is broken"
    assert not all(outcomes), "40 new connections in a burst all got through: no rate limit"
