"""Templates of the issue 23 controls rendered with the roles' own defaults and vars (no VM): what each file says is
what docs/hardening.md claims; tests/roles/test_vm_hardening.py proves the same files take effect on the VM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
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


# --- the AIDE check's and journal-upload's metrics (node_exporter's textfile collector) ------------------------------

JOURNAL_UPLOAD = yaml.safe_load((REPO / "roles/journal_upload/defaults/main.yml").read_text(encoding="utf-8"))
HOST_RULES = REPO / "monitoring/prometheus/rules/host.rules.yml"
# What systemd hands an ExecStopPost= command besides these (systemd.exec(5)); the scripts must need nothing more.
STOP_POST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def _task_dest(role: str, tasks_file: str, template: str) -> str:
    """Where the role's tasks install `template`: the path the unit's ExecStopPost= must name."""
    tasks = yaml.safe_load((REPO / f"roles/{role}/tasks/{tasks_file}").read_text(encoding="utf-8"))
    flat = [t for task in tasks for t in task.get("block", [task])]
    return next(
        t["ansible.builtin.template"]["dest"]
        for t in flat
        if t.get("ansible.builtin.template", {}).get("src") == template
    )


def _stop_post(unit: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStopPost=")]


def _textfile_values(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def _run_metric_script(script: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["sh", str(script)], env=STOP_POST_ENV | env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{script.name} with {env}: rc={done.returncode} {done.stderr}"


def test_the_metric_scripts_write_to_node_exporters_textfile_directory() -> None:
    node_exporter = yaml.safe_load((REPO / "roles/node_exporter/defaults/main.yml").read_text(encoding="utf-8"))
    directory = node_exporter["node_exporter_textfile_directory"]
    assert BASE["base_integrity_textfile_dir"] == directory
    assert JOURNAL_UPLOAD["journal_upload_textfile_dir"] == directory
    rules = yaml.safe_load(HOST_RULES.read_text(encoding="utf-8"))["groups"][0]["rules"]
    exprs = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    assert exprs["FileIntegrityDifferences"] == "node_aide_check_differences == 1", exprs
    assert exprs["FileIntegrityCheckFailed"] == "node_aide_check_failed == 1", exprs
    assert "node_aide_check_timestamp_seconds" in exprs["FileIntegrityCheckStale"], exprs
    assert "node_journal_upload_last_failure_timestamp_seconds" in exprs["LogShippingFailing"], exprs


def test_the_aide_check_unit_publishes_its_outcome_after_every_run() -> None:
    """`-+`: as root outside the unit's sandbox, and a metric that cannot be written leaves the check's result alone."""
    dest = _task_dest("base", "integrity.yml", "aide-check-metric.j2")
    assert _stop_post(render("base", "aide-check.service.j2", {})) == [f"-+{dest}"]
    assert _stop_post(render("base", "aide-check.service.j2", {"base_integrity_metric": False})) == []


@pytest.mark.parametrize(
    ("env", "differences", "failed"),
    [
        ({"SERVICE_RESULT": "success", "EXIT_CODE": "exited", "EXIT_STATUS": "0"}, "0", "0"),
        ({"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "1"}, "1", "0"),
        ({"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "7"}, "1", "0"),
        ({"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "17"}, "0", "1"),
        ({"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "18"}, "0", "1"),
        ({"SERVICE_RESULT": "success", "EXIT_CODE": "killed", "EXIT_STATUS": "TERM"}, "0", "1"),
        ({"SERVICE_RESULT": "timeout", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}, "0", "1"),
        ({"SERVICE_RESULT": "resources"}, "0", "1"),
    ],
    ids=["clean", "added", "all-kinds", "config-error", "io-error", "stopped", "timeout", "not-started"],
)
def test_the_aide_metric_script_reads_how_the_check_ended(
    tmp_path: Path, env: dict[str, str], differences: str, failed: str
) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    script = tmp_path / "aide-check-metric"
    script.write_text(render("base", "aide-check-metric.j2", {"base_integrity_textfile_dir": str(textfile)}))
    before = int(time.time())
    _run_metric_script(script, env)
    prom = textfile / "aide_check.prom"
    values = _textfile_values(prom)
    assert (values.get("node_aide_check_differences"), values.get("node_aide_check_failed")) == (differences, failed), (
        env,
        values,
    )
    assert before <= int(values["node_aide_check_timestamp_seconds"]) <= time.time() + 1, values
    assert prom.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in textfile.iterdir()) == ["aide_check.prom"], "the temporary file was left behind"


def test_the_metric_scripts_write_nothing_without_node_exporters_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-node-exporter"
    for role, template, variable, env in (
        ("base", "aide-check-metric.j2", "base_integrity_textfile_dir", {"EXIT_CODE": "exited", "EXIT_STATUS": "1"}),
        ("journal_upload", "failure-metric.j2", "journal_upload_textfile_dir", {"SERVICE_RESULT": "exit-code"}),
    ):
        script = tmp_path / template
        script.write_text(render(role, template, {variable: str(missing)}))
        _run_metric_script(script, env)
    assert not missing.exists()


def test_the_journal_upload_drop_in_publishes_every_failed_stop() -> None:
    dest = _task_dest("journal_upload", "main.yml", "failure-metric.j2")
    url = {"journal_upload_url": "https://10.0.3.10:19532"}
    assert _stop_post(render("journal_upload", "service-override.conf.j2", url)) == [f"-+{dest}"]
    off = render("journal_upload", "service-override.conf.j2", url | {"journal_upload_failure_metric": False})
    assert _stop_post(off) == []


def test_the_failure_metric_counts_failed_stops_and_ignores_clean_ones(tmp_path: Path) -> None:
    """The role's restart handler, `systemctl stop` and shutdown end the uploader with SIGTERM, which systemd counts as
    success: nothing is written. A failed upload (exit-code), a stop killed after TimeoutStopSec (timeout) and a start
    that could not begin (resources) each count once, on top of the previous file's count."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    script = tmp_path / "journal-upload-failure-metric"
    script.write_text(render("journal_upload", "failure-metric.j2", {"journal_upload_textfile_dir": str(textfile)}))
    prom = textfile / "journal_upload.prom"
    _run_metric_script(script, {"SERVICE_RESULT": "success", "EXIT_CODE": "killed", "EXIT_STATUS": "TERM"})
    assert not prom.exists(), "a clean stop wrote a failure"
    seen = []
    for result in ("exit-code", "timeout", "success", "resources"):
        before = int(time.time())
        _run_metric_script(script, {"SERVICE_RESULT": result, "EXIT_CODE": "exited", "EXIT_STATUS": "1"})
        values = _textfile_values(prom)
        seen.append((result, values["node_journal_upload_failures_total"]))
        if result != "success":
            assert before <= int(values["node_journal_upload_last_failure_timestamp_seconds"]) <= time.time() + 1
    assert seen == [("exit-code", "1"), ("timeout", "2"), ("success", "2"), ("resources", "3")], seen
    assert prom.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in textfile.iterdir()) == ["journal_upload.prom"], "the temporary file was left behind"
    # A damaged count starts again from 1 instead of stopping the script (Prometheus reads it as a counter reset).
    prom.write_text("node_journal_upload_failures_total garbage\n")
    _run_metric_script(script, {"SERVICE_RESULT": "exit-code"})
    assert _textfile_values(prom)["node_journal_upload_failures_total"] == "1"


@pytest.mark.parametrize(
    ("role", "template"), [("base", "aide-check-metric.j2"), ("journal_upload", "failure-metric.j2")]
)
def test_the_metric_scripts_are_shellcheck_clean(role: str, template: str, tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed here")
    script = tmp_path / template
    script.write_text(render(role, template, {}))
    done = subprocess.run([shellcheck, "--shell=sh", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


# --- AppArmor: the service's profile (roles/apparmor_profile with roles/assistant's __assistant_apparmor_rules) -------

ASSISTANT = yaml.safe_load((REPO / "roles/assistant/defaults/main.yml").read_text(encoding="utf-8"))


def _assistant_profile(extra: dict[str, object] | None = None) -> str:
    return render_service_profile("ai-assistant", extra)[1]


def _profile_rules(extra: dict[str, object] | None = None) -> list[tuple[str, str]]:
    """(path, permissions) of every file rule in the rendered profile, `owner` and `deny` rules included."""
    rules = []
    for line in _assistant_profile(extra).splitlines():
        m = re.match(r'^\s*(?:owner\s+|deny\s+)?("/[^"]+"|/\S+|@\{\w+\}\S*)\s+([rwakmlix]+),\s*$', line)
        if m:
            rules.append((m.group(1).strip('"'), m.group(2)))
    return rules


def test_the_service_profile_writes_only_its_state_and_runs_no_program() -> None:
    rules = _profile_rules()
    assert rules, "no file rule found in the rendered profile"
    writable = sorted({path for path, perms in rules if set(perms) & set("wal")})
    data = ASSISTANT["assistant_data_dir"]
    assert writable == sorted(
        [f"{data}/", f"{data}/**", "/tmp/**", "/var/tmp/**", "@{PROC}/@{pid}/task/@{tid}/comm"]
    ), writable
    # The only program: ldconfig, which ctypes.util.find_library runs and which reads the linker cache.
    assert [path for path, perms in rules if "x" in perms] == ["/{usr/,}sbin/ldconfig"]
    # Nothing the service writes may be mapped executable (W^X across the profile).
    assert not [path for path, perms in rules if "m" in perms and path in writable]
    config = ASSISTANT["assistant_config_dir"]
    assert (f"{config}/**", "r") in rules and (f"{ASSISTANT['assistant_install_dir']}/**", "mr") in rules


def test_the_service_profile_mode_and_extra_rules_follow_the_variables() -> None:
    enforce = _assistant_profile()
    assert "\nprofile ai-assistant flags=(attach_disconnected) {\n" in enforce
    complain = _assistant_profile(
        {"assistant_apparmor_mode": "complain", "assistant_apparmor_extra_rules": ["/srv/models/** r,", "/srv/x r"]}
    )
    assert "\nprofile ai-assistant flags=(attach_disconnected,complain) {\n" in complain
    assert "  # assistant_apparmor_extra_rules: " in complain
    assert "  /srv/models/** r,\n" in complain and "  /srv/x r,\n" in complain
    assert ",," not in complain and complain.rstrip().endswith("}")


def test_the_service_profile_is_loaded_before_the_unit_that_names_it_without_a_drop_in() -> None:
    """The assistant's own unit names the profile (AppArmorProfile=, only when the role loads it), so the shared role
    is included with no units (no drop-in, no restart handler) as unit.yml's first task, before the unit is written."""
    assert "\nAppArmorProfile=ai-assistant\n" in render("assistant", "ai-assistant.service.j2", {})
    off = render("assistant", "ai-assistant.service.j2", {"assistant_apparmor_enabled": False})
    assert "AppArmorProfile" not in off
    tasks = yaml.safe_load((REPO / "roles/assistant/tasks/unit.yml").read_text(encoding="utf-8"))
    first, unit = tasks[0], tasks[1]
    assert first.get("ansible.builtin.include_role", {}).get("name") == "apparmor_profile", first
    assert unit["ansible.builtin.template"]["src"] == "ai-assistant.service.j2", unit
    include_vars = first["vars"]
    assert include_vars["apparmor_profile_units"] == [] and "apparmor_profile_restart_handler" not in include_vars
    assert include_vars["apparmor_profile_enabled"] == "{{ __assistant_apparmor }}"
    # The container method runs under podman's profile: the role removes the ai-assistant one there.
    container = render_service_profile("ai-assistant", {"assistant_install_method": "container"})[0]
    assert container["apparmor_profile_enabled"] is False
    assert (
        "apparmor_assistant" in first["tags"]
        and "apparmor_assistant" in first["ansible.builtin.include_role"]["apply"]["tags"]
    )


def test_apparmor_parser_accepts_the_service_profile(tmp_path: Path) -> None:
    """Debian 12's parser compiles the rendered profile in both modes (the role validates it the same way before
    installing it)."""
    parser = _parser()
    for name, extra in (("default", {}), ("complain", {"assistant_apparmor_mode": "complain"})):
        profile = tmp_path / name
        profile.write_text(_assistant_profile(extra))
        done = subprocess.run([parser, "-Q", "-K", str(profile)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{name}: {done.stderr}"


# --- AppArmor: every other service's profile (roles/apparmor_profile, the rules in each calling role's vars) ---------

from airgap.apt import flat_tasks  # noqa: E402

# Profile -> (calling role, its variable prefix, what the profile may write, what it may run). The writable paths and
# programs are the claims of docs/hardening.md's apparmor_* rows and the roles' READMEs.
SERVICE_PROFILES: dict[str, tuple[str, str, set[str], set[str]]] = {
    "redis-server": (
        "redis",
        "redis",
        {"/data/redis/**", "/var/log/redis/*.log", "@{run}/redis/redis-server.pid", "@{run}/systemd/notify"},
        set(),
    ),
    "nginx": (
        "reverse_proxy",
        "reverse_proxy",
        {"/var/log/nginx/*.log", "/var/lib/nginx/**", "@{run}/nginx.pid"},
        {"/{usr/,}sbin/start-stop-daemon"},
    ),
    "link-tls": ("link_tls", "link_tls", {"@{run}/link-tls/**"}, {"/{usr/,}bin/kill"}),
    "prometheus": (
        "prometheus",
        "prometheus",
        {"/var/lib/prometheus/metrics2/", "/var/lib/prometheus/metrics2/**"},
        {"/{usr/,}bin/kill"},
    ),
    "prometheus-blackbox-exporter": ("prometheus", "prometheus_blackbox", set(), {"/{usr/,}bin/kill"}),
    "prometheus-alertmanager": (
        "alertmanager",
        "alertmanager",
        {"/var/lib/prometheus/alertmanager/", "/var/lib/prometheus/alertmanager/**"},
        {"/{usr/,}bin/kill"},
    ),
    "prometheus-node-exporter": ("node_exporter", "node_exporter", set(), {"/{usr/,}bin/kill"}),
    "model-server": (
        "model_server",
        "model_server",
        {"/tmp/**", "/var/tmp/**", "@{PROC}/@{pid}/task/@{tid}/comm"},
        set(),
    ),
}
# What makes a profile's include switched on where the role's own condition also applies.
PROFILE_EXTRA: dict[str, dict[str, object]] = {
    "prometheus-blackbox-exporter": {"prometheus_tls_probe_targets": ["assistant.example.com:443"]},
}
_FILE_RULE = re.compile(r'^\s*(?:owner\s+|deny\s+)?("/[^"]+"|/\S+|@\{\w+\}\S*)\s+([rwakmlixPUuC]+),\s*$')


def apparmor_includes() -> dict[str, tuple[str, str, dict[str, object]]]:
    """Profile name -> (role, task, the include's vars) for every include_role of roles/apparmor_profile."""
    found: dict[str, tuple[str, str, dict[str, object]]] = {}
    for path in sorted((REPO / "roles").glob("*/tasks/*.yml")):
        for task in flat_tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            spec = task.get("ansible.builtin.include_role")
            if isinstance(spec, dict) and spec.get("name") == "apparmor_profile":
                name = str(task["vars"]["apparmor_profile_name"])
                # A name from the role's vars (the assistant's, which its unit template names too).
                if m := re.fullmatch(r"\{\{ (\w+) \}\}", name):
                    name = str(_role_vars(path.parts[-3])[m.group(1)])
                assert name not in found, f"two includes write the {name} profile"
                found[name] = (path.parts[-3], str(task.get("name")), dict(task["vars"]))
    return found


def _role_vars(role: str) -> dict[str, object]:
    variables: dict[str, object] = {}
    for rel in ("defaults/main.yml", "vars/main.yml"):
        if (REPO / "roles" / role / rel).exists():
            variables.update(yaml.safe_load((REPO / "roles" / role / rel).read_text(encoding="utf-8")) or {})
    return variables


def render_service_profile(name: str, extra: dict[str, object] | None = None) -> tuple[dict[str, object], str]:
    """The include's vars as the calling role passes them (templated with its defaults, vars and `extra`), and the
    profile roles/apparmor_profile renders from them."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    role, _, include_vars = apparmor_includes()[name]

    def trust(value: object) -> object:
        # Role files are trusted templates when Ansible loads them, nested ones (a rule list's items) included.
        if isinstance(value, str):
            return trust_as_template(value)
        if isinstance(value, list):
            return [trust(v) for v in value]
        if isinstance(value, dict):
            return {k: trust(v) for k, v in value.items()}
        return value

    def trusted(values: dict[str, object]) -> dict[str, object]:
        return {k: trust(v) for k, v in values.items()}

    caller = trusted(_role_vars(role) | PROFILE_EXTRA.get(name, {}) | (extra or {}))
    loader = DataLoader()
    passed = {k: Templar(loader=loader, variables=caller).template(v) for k, v in trusted(include_vars).items()}
    variables = trusted(_role_vars("apparmor_profile") | {"ansible_managed": "Managed by Ansible"} | passed)
    loader.set_basedir(str(REPO / "roles/apparmor_profile"))
    source = (REPO / "roles/apparmor_profile/templates/profile.j2").read_text(encoding="utf-8")
    return passed, str(Templar(loader=loader, variables=variables).template(trust_as_template(source)))


def test_every_service_includes_the_profile_role_with_its_own_switch_mode_and_extra_rules() -> None:
    found = apparmor_includes()
    assert sorted(found) == sorted([*SERVICE_PROFILES, "ai-assistant"]), sorted(found)
    for name, (role, prefix, _, _) in [*SERVICE_PROFILES.items(), ("ai-assistant", ("assistant", "assistant", {}, {}))]:
        where, task, include_vars = found[name]
        assert where == role, f"{name} is included by roles/{where}, not roles/{role}"
        assert task.endswith(f"| apparmor_{task.rsplit('apparmor_', 1)[-1]}"), task
        # Each caller's extra rules go in apparmor_profile_extra_rules, so a wrong one is reported by its name.
        assert include_vars["apparmor_profile_rules"] == f"{{{{ __{prefix}_apparmor_rules }}}}", (name, include_vars)
        assert include_vars["apparmor_profile_extra_rules"] == f"{{{{ {prefix}_apparmor_extra_rules }}}}", name
        assert include_vars["apparmor_profile_extra_rules_name"] == f"{prefix}_apparmor_extra_rules", name
        switch = "prometheus" if prefix == "prometheus_blackbox" else prefix
        assert str(include_vars["apparmor_profile_mode"]) == f"{{{{ {switch}_apparmor_mode }}}}", (name, include_vars)
        # Enforce by default: the complain-mode VM run's records are in the rules (ADR 0119; the assistant's, ADR 0118).
        assert _role_vars(role)[f"{switch}_apparmor_mode"] == "enforce", f"roles/{role}: {switch}_apparmor_mode"
        if name == "ai-assistant":
            continue  # its switch and units: test_the_service_profile_is_loaded_before_the_unit_that_names_it_...
        assert f"{switch}_apparmor_enabled" in str(include_vars["apparmor_profile_enabled"]), (name, include_vars)
        assert include_vars["apparmor_profile_units"] == [f"{name}.service"], (name, include_vars)


@pytest.mark.parametrize("name", sorted(SERVICE_PROFILES))
def test_each_service_profile_writes_and_runs_only_what_its_row_says(name: str) -> None:
    passed, text = render_service_profile(name)
    assert passed["apparmor_profile_enabled"] is True, f"{name}: switched off by the role's defaults"
    assert f"\nprofile {name} flags=(attach_disconnected) {{\n" in text, text[:1500]
    assert "\n  include <abstractions/base>\n" in text
    rules = [(m.group(1).strip('"'), m.group(2)) for line in text.splitlines() if (m := _FILE_RULE.match(line))]
    assert rules, f"{name}: no file rule found in the rendered profile"
    _, _, writable, programs = SERVICE_PROFILES[name]
    assert {path for path, perms in rules if set(perms) & set("wal")} == writable, rules
    assert {path for path, perms in rules if set(perms) & set("xPUuC")} == programs, rules
    # Whatever may be written is never mapped executable.
    assert not [path for path, perms in rules if "m" in perms and set(perms) & set("wa")], rules
    # Rules are inside the profile and every item became one rule: no item's trailing comma doubled.
    assert ",," not in text and text.rstrip().endswith("}")


def test_the_extra_rules_and_complain_reach_the_profile() -> None:
    _, text = render_service_profile(
        "redis-server",
        {"redis_apparmor_mode": "complain", "redis_apparmor_extra_rules": ["/srv/tls/** r,", "/srv/x r"]},
    )
    assert "\nprofile redis-server flags=(attach_disconnected,complain) {\n" in text
    # After the role's own rules, under a comment naming the variable they came from.
    assert "  # redis_apparmor_extra_rules: this deployment's own rules" in text
    assert text.index("  # redis_apparmor_extra_rules") < text.index("  /srv/tls/** r,\n") < text.index("  /srv/x r,\n")
    assert "redis_apparmor_extra_rules" not in render_service_profile("redis-server")[1]
    # Abstractions are written as they are: an include takes no comma.
    assert "  include <abstractions/nameservice>\n" in text


def test_switches_turn_the_profiles_off() -> None:
    assert (
        render_service_profile("nginx", {"reverse_proxy_apparmor_enabled": False})[0]["apparmor_profile_enabled"]
        is False
    )
    # The blackbox exporter is profiled only where the role runs it.
    off = render_service_profile("prometheus-blackbox-exporter", {"prometheus_tls_probe_targets": []})[0]
    assert off["apparmor_profile_enabled"] is False
    # TGI runs in a container under podman's profile: the llama.cpp profile is for the llamacpp backend only.
    tgi = render_service_profile("model-server", {"model_server_backend": "tgi"})[0]
    assert tgi["apparmor_profile_enabled"] is False


def test_the_blackbox_profile_has_no_raw_socket() -> None:
    """Its one module is a TLS handshake (templates/blackbox.yml.j2): an ICMP module would need raw sockets."""
    module = render("prometheus", "blackbox.yml.j2", {})
    assert "prober: icmp" not in module
    rules = [line for line in render_service_profile("prometheus-blackbox-exporter")[1].splitlines() if "#" not in line]
    assert not [line for line in rules if re.search(r"\b(inet6?|packet) raw|net_raw", line)], rules


def _parser() -> str:
    parser = shutil.which("apparmor_parser") or next(
        (p for p in ("/sbin/apparmor_parser", "/usr/sbin/apparmor_parser") if Path(p).exists()), None
    )
    if parser is None or not Path("/etc/apparmor.d/tunables/global").exists():
        pytest.skip("apparmor_parser is missing (make bootstrap installs it); the VM converge validates the profiles")
    return parser


@pytest.mark.parametrize("name", sorted(SERVICE_PROFILES))
def test_apparmor_parser_accepts_every_service_profile(name: str, tmp_path: Path) -> None:
    """Debian 12's parser compiles each rendered profile in both modes, as the role's validate does before the file
    reaches /etc/apparmor.d."""
    parser = _parser()
    prefix = SERVICE_PROFILES[name][1]
    switch = "prometheus" if prefix == "prometheus_blackbox" else prefix
    for mode in ("complain", "enforce"):
        profile = tmp_path / f"{name}-{mode}"
        profile.write_text(render_service_profile(name, {f"{switch}_apparmor_mode": mode})[1])
        done = subprocess.run([parser, "-Q", "-K", str(profile)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{name} ({mode}): {done.stderr}"


# --- AppArmor: a wrong <role>_apparmor_extra_rules entry -----------------------------------------------------------

WRONG_RULE = "/etc/foo rwz"  # z is no permission
ALL_PROFILES = sorted([*SERVICE_PROFILES, "ai-assistant"])


def _extra_rules_variable(name: str) -> str:
    prefix = "assistant" if name == "ai-assistant" else SERVICE_PROFILES[name][1]
    return f"{prefix}_apparmor_extra_rules"


@pytest.mark.parametrize("name", ALL_PROFILES)
def test_apparmor_parser_refuses_a_wrong_extra_rule_naming_its_line(name: str, tmp_path: Path) -> None:
    """Each profile as roles/apparmor_profile renders it with a wrong extra rule after a good one: the parser (the
    template's validate, -Q -K) refuses it, and its message gives the rule's line."""
    parser = _parser()
    text = render_service_profile(name, {_extra_rules_variable(name): ["/srv/ok r", WRONG_RULE]})[1]
    profile = tmp_path / name
    profile.write_text(text)
    done = subprocess.run([parser, "-Q", "-K", str(profile)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, f"{name}: the parser accepted {WRONG_RULE!r}"
    m = re.search(r"at line (\d+): (.*)", done.stderr)
    assert m, f"{name}: no line in the parser's message: {done.stderr}"
    assert text.splitlines()[int(m.group(1)) - 1] == f"  {WRONG_RULE},", (m.group(0), text)
    assert "unexpected TOK_ID, expecting TOK_MODE" in m.group(2), done.stderr


def test_the_role_stops_on_a_wrong_extra_rule_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    """The real roles/apparmor_profile in --check on localhost (nothing written, the parser reads the profile from
    stdin): a wrong extra rule stops the run before the kernel is even asked, with one line naming the calling role's
    variable, the rule and the parser's reason; a rule merge error (no line) gives the parser's lines; a good rule
    passes the check."""
    from tests.roles.test_static import VENV_BIN, ansible_env

    _parser()
    passed = render_service_profile("redis-server")[0]
    # Plain values (the templated ones carry Ansible's tags), the units left out: nothing to attach in --check.
    include = {
        k: v
        for k, v in json.loads(json.dumps(passed)).items()
        if k not in ("apparmor_profile_extra_rules", "apparmor_profile_units", "apparmor_profile_restart_handler")
    }
    cases = {
        "wrong": ["/srv/ok r", WRONG_RULE],
        "merge": ["/usr/bin/foo ix", "/usr/bin/foo ux"],
        "good": ["/srv/ok r"],
    }
    tasks = [
        {
            "name": case,
            "block": [
                {
                    "name": f"{case}: include",
                    "ansible.builtin.include_role": {"name": "apparmor_profile"},
                    "vars": {**include, "apparmor_profile_extra_rules": extra, "apparmor_profile_units": []},
                },
                {"name": f"{case}: not refused", "ansible.builtin.set_fact": {f"result_{case}": "NOT REFUSED"}},
            ],
            "rescue": [
                {
                    "name": f"{case}: record",
                    "ansible.builtin.set_fact": {f"result_{case}": "{{ ansible_failed_result.msg | default('') }}"},
                }
            ],
        }
        for case, extra in cases.items()
    ]
    out = tmp_path / "results.json"
    tasks.append(
        {
            "name": "write",
            "ansible.builtin.copy": {
                "content": "{{ {" + ", ".join(f"'{c}': result_{c}" for c in cases) + "} | to_json }}",
                "dest": str(out),
            },
            "check_mode": False,
        }
    )
    play = [{"name": "wrong extra rules", "hosts": "localhost", "gather_facts": False, "become": False, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check", "play.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**ansible_env(), "ANSIBLE_ROLES_PATH": str(REPO / "roles")},
        timeout=300,
    )
    assert out.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    if "apt" in results["wrong"].lower() and "apparmor_parser" not in results["wrong"]:
        pytest.skip(f"apt cannot run in --check here: {results['wrong']}")
    text = render_service_profile("redis-server", {"redis_apparmor_extra_rules": cases["wrong"]})[1]
    line = text.splitlines().index(f"  {WRONG_RULE},") + 1
    assert results["wrong"] == (
        f"redis_apparmor_extra_rules: apparmor_parser refuses the redis-server profile with these rules at line {line}"
        f" ({WRONG_RULE},): syntax error, unexpected TOK_ID, expecting TOK_MODE"
    ), results
    assert (
        results["merge"].startswith(
            "redis_apparmor_extra_rules: apparmor_parser refuses the redis-server profile with these rules: "
        )
        and "conflicting x modifiers" in results["merge"]
        and "\n" not in results["merge"]
    ), results
    # Past the check: on a host without AppArmor in the kernel (a container) the next assert stops it.
    assert results["good"] == "NOT REFUSED" or results["good"].startswith("AppArmor is off"), results
