"""Templates of the issue 23 controls rendered with the roles' own defaults and vars (no VM): what each file says is
what docs/hardening.md claims; tests/roles/test_vm_hardening.py proves the same files take effect on the VM."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.roles.test_static import render

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "roles/base/defaults/main.yml").read_text(encoding="utf-8"))
ADMIN = {"firewall_admin_cidrs": ["192.0.2.0/28"]}


def _output_chain(ruleset: str) -> str:
    return ruleset[ruleset.index("chain output {") :]


def test_egress_accept_by_default_has_no_allowlist_rules() -> None:
    out = _output_chain(render("firewall", "nftables.conf.j2", ADMIN))
    assert "policy accept;" in out and "daddr" not in out and "nft-egress-drop" not in out


def test_egress_drop_allows_the_list_per_family_and_logs_the_rest_rate_limited() -> None:
    allow = [
        {"cidrs": ["10.0.2.2", "2001:db8::5"], "ports": [443, 8080], "proto": "tcp", "comment": 'model "server"'},
        {"cidrs": ["10.0.0.2"], "ports": [53], "proto": "udp", "comment": "dns"},
    ]
    out = _output_chain(
        render(
            "firewall", "nftables.conf.j2", ADMIN | {"firewall_egress_policy": "drop", "firewall_egress_allow": allow}
        )
    )
    lines = [line.strip() for line in out.splitlines()]
    assert "type filter hook output priority filter; policy drop;" in lines
    # Replies to inbound connections (SSH, HTTPS) and loopback go out before any allowlist rule.
    assert lines.index("ct state established,related accept") < lines.index('oif "lo" accept')
    assert 'ip daddr { 10.0.2.2 } tcp dport { 443, 8080 } accept comment "model server"' in lines
    assert 'ip6 daddr { 2001:db8::5 } tcp dport { 443, 8080 } accept comment "model server"' in lines
    assert 'ip daddr { 10.0.0.2 } udp dport { 53 } accept comment "dns"' in lines
    log = next(line for line in lines if "log prefix" in line)
    assert log == 'limit rate 10/minute burst 20 packets log prefix "nft-egress-drop: " level info'
    assert lines.index(log) > max(i for i, line in enumerate(lines) if "daddr" in line)


def test_egress_log_line_can_be_turned_off() -> None:
    variables = ADMIN | {
        "firewall_egress_policy": "drop",
        "firewall_egress_allow": [{"cidrs": ["10.0.2.2"], "ports": [443]}],
        "firewall_egress_log_prefix": "",
    }
    out = _output_chain(render("firewall", "nftables.conf.j2", variables))
    assert "log prefix" not in out and "policy drop;" in out


def test_sshd_drop_in_lists_strong_algorithms_banner_and_startups() -> None:
    out = render("base", "sshd-hardening.conf.j2", {})
    assert f"Ciphers {','.join(BASE['base_ssh_ciphers'])}" in out
    assert f"MACs {','.join(BASE['base_ssh_macs'])}" in out
    assert f"KexAlgorithms {','.join(BASE['base_ssh_kex_algorithms'])}" in out
    assert "MaxStartups 10:30:60" in out and "Banner /etc/issue.net" in out
    weak = re.compile(r"cbc|sha1|md5|group1-|group14-sha1|arcfour|3des", re.I)
    for key in ("base_ssh_ciphers", "base_ssh_macs", "base_ssh_kex_algorithms"):
        assert not [a for a in BASE[key] if weak.search(a)], key
    off = render("base", "sshd-hardening.conf.j2", {"base_ssh_ciphers": [], "base_ssh_banner": False})
    assert "Ciphers" not in off and "Banner" not in off and "MACs " in off


def test_unattended_upgrades_list_replaces_debians_and_adds_point_releases() -> None:
    out = render("base", "52unattended-upgrades-ai-assistant.j2", {})
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in out
    patterns = re.findall(r'"(origin=[^"]+)"', out)
    assert patterns == [
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
        "origin=Debian,codename=${distro_codename},label=Debian",
        "origin=Debian,codename=${distro_codename}-updates,label=Debian",
    ]
    security_only = render(
        "base", "52unattended-upgrades-ai-assistant.j2", {"base_unattended_upgrades_point_releases": False}
    )
    assert re.findall(r'"(origin=[^"]+)"', security_only) == patterns[:1]


def test_module_blacklist_stops_explicit_loads_too() -> None:
    out = render("base", "modprobe-blacklist.conf.j2", {})
    for module in BASE["base_blacklisted_kernel_modules"]:
        assert f"install {module} /bin/false" in out and f"blacklist {module}" in out


def test_sudo_core_dump_and_banner_files() -> None:
    sudoers = render("base", "sudoers-hardening.j2", {})
    assert "Defaults use_pty" in sudoers and 'Defaults logfile="/var/log/sudo.log"' in sudoers
    assert "* hard core 0" in render("base", "limits-core.conf.j2", {})
    assert "Storage=none" in render("base", "coredump.conf.j2", {})
    banner = render("base", "issue.j2", {})
    assert "Authorised use only" in banner and not re.search(r"\\[mrsv]", banner)
    tmp = render("base", "tmp.mount.j2", {})
    assert "Options=mode=1777,strictatime,nosuid,nodev,noexec,size=25%" in tmp


def test_reboot_required_script_writes_to_node_exporters_textfile_directory() -> None:
    node_exporter = yaml.safe_load((REPO / "roles/node_exporter/defaults/main.yml").read_text(encoding="utf-8"))
    assert BASE["base_reboot_required_textfile_dir"] == node_exporter["node_exporter_textfile_directory"]
    script = render("base", "reboot-required-metric.j2", {})
    assert 'mv "$tmp" "$dir/reboot_required.prom"' in script and "node_reboot_required $value" in script
    rules = (REPO / "monitoring/prometheus/rules/host.rules.yml").read_text(encoding="utf-8")
    assert "alert: NodeRebootRequired" in rules and "node_reboot_required == 1" in rules


def test_sshd_accepts_the_drop_in(tmp_path: Path) -> None:
    """Debian 12's own sshd parses the rendered drop-in (the role validates it the same way before installing it):
    every algorithm name exists in this OpenSSH."""
    sshd, keygen = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("ssh-keygen")
    if not Path(sshd).exists() or keygen is None:
        pytest.skip("openssh-server is not installed on this machine; the VM converge validates the drop-in")
    privsep = Path("/run/sshd")  # sshd -t insists on it; systemd makes it when sshd runs, and nothing runs it here
    if not privsep.is_dir():
        if os.geteuid() != 0:
            pytest.skip("/run/sshd is missing and only root may create it; the VM converge validates the drop-in")
        privsep.mkdir(mode=0o755)
    key = tmp_path / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    conf = tmp_path / "sshd_config"
    conf.write_text(render("base", "sshd-hardening.conf.j2", {}) + f"HostKey {key}\n")
    done = subprocess.run([sshd, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad_config"
    bad.write_text(
        render("base", "sshd-hardening.conf.j2", {"base_ssh_ciphers": ["nonesuch-cipher"]}) + f"HostKey {key}\n"
    )
    assert subprocess.run([sshd, "-t", "-f", str(bad)], capture_output=True, timeout=60).returncode != 0
