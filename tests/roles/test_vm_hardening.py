"""The CIS Debian 12 Level 1 controls of docs/hardening.md, asserted on the one converged VM (issue 23).

Read-only checks of the converged state, then two short scenarios that put the VM back as they found it: the
reboot-required metric (a marker file in /run, removed again) and an internal-CA certificate re-signed inside its
renewal window (its own name and directory, removed afterwards). The egress drop policy is asserted in
test_vm_egress_only.py, whose re-run of the firewall carries it (one switch and one restore for both). Last, `lynis
audit system --quick` prints the hardening index and every warning. Each test's name is the one docs/hardening.md
cites for its controls.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

from tests.helpers import wait_until
from tests.roles.conftest import REPO, TIMINGS, TestVM
from tests.roles.vm import lynis_audit

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800, func_only=True)]

SITE = REPO / "playbooks/site.yml"
BASE_DEFAULTS: dict[str, Any] = yaml.safe_load((REPO / "roles/base/defaults/main.yml").read_text(encoding="utf-8"))
TEXTFILE = Path(BASE_DEFAULTS["base_reboot_required_textfile_dir"]) / "reboot_required.prom"
AIDE_TEXTFILE = Path(BASE_DEFAULTS["base_integrity_textfile_dir"]) / "aide_check.prom"
UPLOAD_DEFAULTS: dict[str, Any] = yaml.safe_load(
    (REPO / "roles/journal_upload/defaults/main.yml").read_text(encoding="utf-8")
)
UPLOAD_TEXTFILE = Path(UPLOAD_DEFAULTS["journal_upload_textfile_dir"]) / "journal_upload.prom"


# Runs in the guest: reads the system's pwquality configuration and checks the password given as its argument.
PWQUALITY_CHECK = """
import ctypes, sys
lib = ctypes.CDLL("libpwquality.so.1")
lib.pwquality_default_settings.restype = ctypes.c_void_p
lib.pwquality_read_config.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
lib.pwquality_check.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
settings = lib.pwquality_default_settings()
assert lib.pwquality_read_config(settings, None, None) == 0
password = sys.argv[1].encode()
print("accepted" if lib.pwquality_check(settings, password, None, b"ops", None) >= 0 else "refused")
"""


@pytest.fixture(scope="module")
def host(test_vm: TestVM) -> Any:
    return testinfra.get_host("ssh://testvm", ssh_config=str(test_vm.ssh_config))


def sshd_effective(host: Any) -> dict[str, str]:
    out = host.check_output("sshd -T")
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines())}


# --- SSH ------------------------------------------------------------------------------------------------------------


def test_sshd_configuration_is_root_only(host: Any) -> None:
    """CIS 5.1.1: Debian ships sshd_config 0644; the role's drop-in is written 0600."""
    drop_ins = host.check_output("ls /etc/ssh/sshd_config.d/*.conf").split()
    for path in ["/etc/ssh/sshd_config", *drop_ins]:
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600), path


def test_sshd_crypto_banner_and_limits(host: Any) -> None:
    eff = sshd_effective(host)
    assert eff["ciphers"] == ",".join(BASE_DEFAULTS["base_ssh_ciphers"])
    assert eff["macs"] == ",".join(BASE_DEFAULTS["base_ssh_macs"])
    assert eff["kexalgorithms"] == ",".join(BASE_DEFAULTS["base_ssh_kex_algorithms"])
    assert eff["maxstartups"] == BASE_DEFAULTS["base_ssh_max_startups"]
    assert eff["banner"] == "/etc/issue.net"
    assert eff["loglevel"] == "VERBOSE"
    assert eff["hostbasedauthentication"] == "no" and eff["ignorerhosts"] == "yes"
    assert eff["gssapiauthentication"] == "no" and eff["usepam"] == "yes"
    assert eff["clientaliveinterval"] == "300" and eff["maxsessions"] == "10"


def test_login_banners_name_no_system(host: Any) -> None:
    for path in ("/etc/issue", "/etc/issue.net"):
        f = host.file(path)
        assert f.user == "root" and f.mode == 0o644
        text = f.content_string
        assert "Authorised use only" in text
        # agetty would expand these into the OS name, kernel release and architecture.
        assert not re.search(r"\\[mrsv]", text) and "Debian" not in text


# --- kernel, mounts, core dumps -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["cramfs", "freevxfs", "hfs", "hfsplus", "jffs2", "udf", "usb-storage", "dccp", "sctp", "rds", "tipc"]
)
def test_blacklisted_module_cannot_be_loaded(host: Any, module: str) -> None:
    assert "install /bin/false" in host.run(f"modprobe -n -v {module}").stdout
    assert host.run(f"modprobe {module}").rc != 0
    assert module.replace("-", "_") not in host.check_output("cut -d' ' -f1 /proc/modules").split()


BOOT_ID = "/proc/sys/kernel/random/boot_id"


@pytest.fixture(scope="session")
def first_boot_id(test_vm: TestVM) -> str:
    """The boot this module's first checks ran in: the after-reboot check proves a reboot came in between. Session
    scope: the vm_last tests run after other modules, and a module-scoped fixture would be read again there, after
    the reboot (CI's run of 2026-12-06 skipped the after-reboot check for that reason)."""
    done = test_vm.ssh(f"cat {BOOT_ID}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def sysctl_not_as_the_role_sets(host: Any) -> dict[str, Any]:
    return {k: host.sysctl(k) for k, v in BASE_DEFAULTS["base_sysctl"].items() if host.sysctl(k) != v}


def test_every_sysctl_of_the_role_is_live(host: Any, first_boot_id: str) -> None:
    wrong = sysctl_not_as_the_role_sets(host)
    assert not wrong, wrong


def test_the_boot_time_sysctl_order_keeps_the_roles_values(host: Any) -> None:
    # Debian's 99-protect-links.conf (fs.protected_fifos = 1) sorts after the role's 60-... file; the role masks it.
    assert host.file("/etc/sysctl.d/99-protect-links.conf").linked_to == "/dev/null"
    # systemd-sysctl is what loads /etc, /run and /usr/lib/sysctl.d at boot, in its order: run it as the boot does.
    done = host.run("/usr/lib/systemd/systemd-sysctl")
    assert done.rc == 0, done.stderr
    wrong = sysctl_not_as_the_role_sets(host)
    assert not wrong, f"after systemd-sysctl (the boot's order): {wrong}"


@pytest.mark.vm_last(order=1)
def test_every_sysctl_of_the_role_is_live_after_the_reboot(test_vm: TestVM, first_boot_id: str) -> None:
    """After test_vm.py's reboot test (vm_last, collected before this module): the values the boot itself loaded."""
    after = testinfra.get_host("ssh://testvm", ssh_config=str(test_vm.ssh_config))
    if after.file(BOOT_ID).content_string.strip() == first_boot_id:
        pytest.skip("the VM has not rebooted since this module's first check: run it with test_vm.py's reboot test")
    wrong = sysctl_not_as_the_role_sets(after)
    assert not wrong, f"after the reboot: {wrong}"


def test_dev_shm_allows_no_devices_setuid_or_executables(host: Any) -> None:
    opts = host.check_output("findmnt -no OPTIONS /dev/shm").split(",")
    assert {"nodev", "nosuid", "noexec"} <= set(opts)
    run = host.run(
        "printf '#!/bin/sh\\necho ran\\n' > /dev/shm/probe && chmod +x /dev/shm/probe && /dev/shm/probe;"
        " rc=$?; rm -f /dev/shm/probe; exit $rc"
    )
    assert run.rc != 0 and "ran" not in run.stdout


# --- AppArmor (CIS 1.3.1) ----------------------------------------------------------------------------------------

ASSISTANT_DEFAULTS: dict[str, Any] = yaml.safe_load(
    (REPO / "roles/assistant/defaults/main.yml").read_text(encoding="utf-8")
)
PROFILE = "ai-assistant"
# One shell for every check (each process start costs 0.1-0.3 s under emulation): the kernel switch, apparmor.service,
# the label of every process in either colour's cgroup (builtins only), then every loaded profile with its mode.
APPARMOR_STATE = r"""
printf 'enabled=%s\n' "$(cat /sys/module/apparmor/parameters/enabled)"
printf 'service=%s/%s\n' "$(systemctl is-enabled apparmor)" "$(systemctl is-active apparmor)"
for unit in ai-assistant ai-assistant-green; do
  procs=/sys/fs/cgroup/system.slice/$unit.service/cgroup.procs
  [ -r "$procs" ] || continue
  while read -r pid; do
    read -r label < "/proc/$pid/attr/current"; printf 'process=%s %s %s\n' "$unit" "$pid" "$label"
  done < "$procs"
done
echo '--- profiles'
cat /sys/kernel/security/apparmor/profiles
"""
# Runs in the guest as root under the service's profile (aa-exec, from the apparmor package the roles install): root
# may read /etc/shadow, list /root, run /bin/sh and write /etc/ai-assistant as far as file permissions go, so every
# refusal here is the profile's. The configuration read is the control: the profile does let it through.
APPARMOR_PROBE = r"""
import json, os, subprocess, sys
config = sys.argv[1]
def attempt(action):
    try:
        action()
        return "allowed"
    except PermissionError:
        return "refused"
    except OSError as exc:
        return f"error {exc}"
def write_config():
    path = os.path.join(config, "apparmor-probe")
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)
print(json.dumps({
    "pid": os.getpid(),
    "read config": attempt(lambda: open(os.path.join(config, "assistant.yaml")).read()),
    "read /etc/shadow": attempt(lambda: open("/etc/shadow").read()),
    "list /root": attempt(lambda: os.listdir("/root")),
    "run /bin/sh": attempt(lambda: subprocess.run(["/bin/sh", "-c", "true"], check=False)),
    "write config": attempt(write_config),
}))
"""
# The kernel's AppArmor records (auditd writes them to audit.log; rotated files keep their names with .N).
APPARMOR_RECORDS = (
    "cat /var/log/audit/audit.log* 2>/dev/null | grep -a 'profile=\"" + PROFILE + "\"' "
    "| grep -a -E 'apparmor=\"(DENIED|ALLOWED)\"' || true"
)


def test_apparmor_is_enabled_and_every_profile_enforces_or_complains(host: Any) -> None:
    """CIS 1.3.1.1-1.3.1.3, and the service's processes under its profile in enforce mode."""
    out = host.check_output(APPARMOR_STATE)
    head, _, profiles = out.partition("--- profiles\n")
    facts = [line.partition("=") for line in head.splitlines()]
    assert ("enabled", "=", "Y") in facts, f"AppArmor is not on in the running kernel:\n{out}"
    assert ("service", "=", "enabled/active") in facts, f"apparmor.service:\n{out}"
    loaded = [line for line in profiles.splitlines() if line.strip()]
    other = [line for line in loaded if not re.search(r" \((enforce|complain)\)$", line)]
    assert not other, f"profiles neither enforcing nor complaining (CIS 1.3.1.3): {other}"
    mode = ASSISTANT_DEFAULTS["assistant_apparmor_mode"]
    assert f"{PROFILE} ({mode})" in loaded, f"the service's profile is not loaded in {mode} mode: {loaded}"
    labels = [value.split(" ", 2) for key, _, value in facts if key == "process"]
    assert any(unit == "ai-assistant" for unit, _, _ in labels), f"no process in ai-assistant.service:\n{out}"
    unconfined = [(unit, pid, label) for unit, pid, label in labels if label != f"{PROFILE} ({mode})"]
    assert not unconfined, f"service processes not under {PROFILE} ({mode}): {unconfined}"


def test_the_service_profile_refuses_secrets_shells_and_writes_outside_its_state(host: Any) -> None:
    """What the profile forbids, tried under it as root (file permissions would allow every one of them), and the
    kernel's DENIED records that name this profile for them."""
    config = ASSISTANT_DEFAULTS["assistant_config_dir"]
    # auditd writes the kernel's records as they come; the loop waits (a second at a time) for the probe's own.
    done = host.run(
        f"out=$(mktemp); aa-exec -p {PROFILE} -- /usr/bin/python3 -I - {config} > $out <<'EOF'\n{APPARMOR_PROBE}\nEOF\n"
        "rc=$?; cat $out; pid=$(sed -n 's/.*\"pid\": \\([0-9]*\\).*/\\1/p' $out); rm -f $out\n"
        "for i in 1 2 3 4 5 6 7 8 9 10; do"
        ' grep -a "pid=$pid " /var/log/audit/audit.log | grep -q -a \'name="/etc/shadow"\' && break; sleep 1; done\n'
        f"echo '--- records'; {APPARMOR_RECORDS}; exit $rc"
    )
    out, _, records = done.stdout.partition("--- records\n")
    assert done.rc == 0 and out.strip(), f"the probe did not run under {PROFILE}: {done.stdout} {done.stderr}"
    result = json.loads(out.strip().splitlines()[-1])
    pid = result.pop("pid")
    assert result == {
        "read config": "allowed",
        "read /etc/shadow": "refused",
        "list /root": "refused",
        "run /bin/sh": "refused",
        "write config": "refused",
    }, f"{result}\n{done.stderr}"
    mine = [line for line in records.split("\n") if f"pid={pid} " in line]
    assert any('name="/etc/shadow"' in line and 'apparmor="DENIED"' in line for line in mine), (
        f"no DENIED record of {PROFILE} for /etc/shadow (pid {pid}):\n{records[-3000:]}"
    )


# Every other service under its own profile (roles/apparmor_profile; docs/adr/0119-apparmor-profiles-for-every-
# service.md): profile -> (unit, the role whose <prefix>_apparmor_mode sets its mode). blackbox_exporter runs only with
# prometheus_tls_probe_targets, which the VM leaves empty: checked to be stopped.
SERVICE_PROFILES: dict[str, tuple[str, str]] = {
    "redis-server": ("redis-server", "redis"),
    "nginx": ("nginx", "reverse_proxy"),
    "link-tls": ("link-tls", "link_tls"),
    "prometheus": ("prometheus", "prometheus"),
    "prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "prometheus-node-exporter": ("prometheus-node-exporter", "node_exporter"),
    "model-server": ("model-server", "model_server"),
    "prometheus-blackbox-exporter": ("prometheus-blackbox-exporter", "prometheus"),
}
OPTIONAL_UNITS = {"prometheus-blackbox-exporter"}


def _service_mode(role: str) -> str:
    defaults = yaml.safe_load((REPO / f"roles/{role}/defaults/main.yml").read_text(encoding="utf-8"))
    return str(defaults[f"{role}_apparmor_mode"])


# One shell for all of them: the label of every process in each unit's cgroup (builtins only; a process that exits
# between the list and its label is skipped), then the loaded profiles.
SERVICE_LABELS = (
    "for unit in " + " ".join(unit for unit, _ in SERVICE_PROFILES.values()) + "; do\n"
    r"""  procs=/sys/fs/cgroup/system.slice/$unit.service/cgroup.procs
  if [ ! -r "$procs" ]; then printf 'absent=%s\n' "$unit"; continue; fi
  while read -r pid; do
    { read -r label < "/proc/$pid/attr/current"; } 2>/dev/null || continue
    printf 'process=%s %s %s\n' "$unit" "$pid" "$label"
  done < "$procs"
done
echo '--- profiles'
cat /sys/kernel/security/apparmor/profiles
"""
)


def test_every_service_runs_under_its_apparmor_profile(host: Any) -> None:
    """Redis, nginx, link-tls, Prometheus, Alertmanager, node_exporter and the llama.cpp server: every process of each
    unit (nginx's workers, redis's snapshot child, ...) carries its profile's label in the role's default mode."""
    out = host.check_output(SERVICE_LABELS)
    head, _, profiles = out.partition("--- profiles\n")
    loaded = {line.strip() for line in profiles.splitlines() if line.strip()}
    facts = [line.partition("=") for line in head.splitlines()]
    absent = {value for key, _, value in facts if key == "absent"}
    labels: dict[str, list[tuple[str, str]]] = {}
    for key, _, value in facts:
        if key == "process":
            unit, pid, label = value.split(" ", 2)
            labels.setdefault(unit, []).append((pid, label))
    problems = []
    for profile, (unit, role) in SERVICE_PROFILES.items():
        if unit in OPTIONAL_UNITS:
            # The VM has no probe targets: the role stops the exporter (its package is baked into the image, and its
            # install started it), so no process of it may run, confined or not.
            if unit not in absent and labels.get(unit):
                problems.append(f"{unit}.service runs without probe targets: {labels[unit]}")
            continue
        expected = f"{profile} ({_service_mode(role)})"
        if expected not in loaded:
            problems.append(f"{profile}: not loaded as {expected!r}")
        if not labels.get(unit):
            problems.append(f"{unit}.service: no process ({'no cgroup' if unit in absent else 'empty cgroup'})")
        problems += [
            f"{unit}.service pid {pid}: {label!r}, not {expected!r}"
            for pid, label in labels.get(unit, [])
            if label != expected
        ]
    assert not problems, "\n".join(problems) + f"\n--- what the VM said:\n{out[-4000:]}"


# Every record of our profiles (the assistant's and every service's), DENIED or ALLOWED (complain mode).
OUR_PROFILES = [PROFILE, *SERVICE_PROFILES]
ALL_APPARMOR_RECORDS = (
    "cat /var/log/audit/audit.log* 2>/dev/null | grep -a -E 'apparmor=\"(DENIED|ALLOWED)\"' "
    "| grep -a -E 'profile=\"(" + "|".join(OUR_PROFILES) + ")\"' || true"
)
RECORD_FIELDS = ("operation", "name", "capname", "family", "sock_type", "requested_mask", "denied_mask", "comm")


# After the whole suite (its deploys, backups and reboot included; order 1: after test_vm.py's reboot test, before
# the SSH rate-limit test that throttles the runner): every access one of our profiles refused, or would have refused
# in complain mode, grouped by profile, operation and name. None is expected; each one printed names the path (or
# capability, or socket) and the permission the profile lacks: add it to the role's rules (vars/main.yml) or fix the
# service, then switch the role's <prefix>_apparmor_mode to enforce.
@pytest.mark.vm_last(order=1)
def test_no_apparmor_profile_refused_anything_its_service_did(host: Any) -> None:
    # "\n" only: auditd's enriched records carry a \x1d separator, which str.splitlines() also splits at, and the half
    # after it (FSUID=, OUID=, ...) would count as a record of its own.
    lines = [line for line in host.check_output(ALL_APPARMOR_RECORDS).split("\n") if line.strip()]
    seen: dict[tuple[str, ...], int] = {}
    for line in lines:
        profile = m.group(1) if (m := re.search(r'\bprofile="([^"]*)"', line)) else "?"
        # The refusal test's own probe runs as python3 under the assistant's profile (aa-exec); the service's
        # processes are ai-assistant (its command's name).
        if profile == PROFILE and 'comm="python3"' in line:
            continue
        verdict = m.group(1) if (m := re.search(r'\bapparmor="([A-Z]+)"', line)) else "?"
        fields = [f"{f}={m.group(1)}" for f in RECORD_FIELDS if (m := re.search(rf'\b{f}="?([^" ]*)"?', line))]
        key = (profile, verdict, *fields)
        seen[key] = seen.get(key, 0) + 1
    report = "\n".join(f"  {n}x {' '.join(key)}" for key, n in sorted(seen.items()))
    print(f"\nAppArmor records of {', '.join(OUR_PROFILES)}: {sum(seen.values())}\n{report}")
    assert not seen, f"our AppArmor profiles refused (or, in complain mode, would refuse) their services:\n{report}"


def fresh_ssh(test_vm: TestVM, command: str, *options: str) -> subprocess.CompletedProcess[str]:
    """A new SSH connection (not the shared control connection, which predates the converge): a new PAM session,
    with the converged sshd's algorithms, banner and limits. `options` are extra `-o` settings (a refused cipher).
    LogLevel INFO: sshd's banner and a refused negotiation show there; the shared ssh_config's ERROR would hide them."""
    settings = ["ControlMaster=no", "ControlPath=none", *options, "LogLevel=INFO"]
    return subprocess.run(
        ["ssh", "-F", str(test_vm.ssh_config), *(arg for s in settings for arg in ("-o", s)), "testvm", command],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_new_login_sees_the_banner_and_negotiates_the_listed_algorithms(test_vm: TestVM) -> None:
    done = fresh_ssh(test_vm, "echo logged-in")
    assert done.returncode == 0 and done.stdout.strip() == "logged-in", done.stderr
    assert "Authorised use only" in done.stderr
    refused = fresh_ssh(test_vm, "true", "Ciphers=aes128-cbc")
    assert refused.returncode != 0 and "no matching cipher" in refused.stderr, refused.stderr


def test_core_dumps_are_off(test_vm: TestVM, host: Any) -> None:
    # pam_limits applies limits.d to every new login session.
    login = fresh_ssh(test_vm, "ulimit -Hc")
    assert login.returncode == 0 and login.stdout.strip() == "0", login.stdout + login.stderr
    assert host.check_output("sysctl -n fs.suid_dumpable") == "0"
    assert host.check_output("sysctl -n kernel.randomize_va_space") == "2"
    conf = host.file("/etc/systemd/coredump.conf.d/60-ai-assistant.conf").content_string
    assert "Storage=none" in conf and "ProcessSizeMax=0" in conf


# --- accounts, sudo, cron, audit ------------------------------------------------------------------------------------


def test_password_quality_is_enforced_by_pam(host: Any) -> None:
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string
    conf = host.file("/etc/security/pwquality.conf.d/60-ai-assistant.conf").content_string
    assert f"minlen = {BASE_DEFAULTS['base_pwquality_minlen']}" in conf and "minclass = 4" in conf
    # libpwquality's own check (the library pam_pwquality calls), through python3's ctypes: no extra package.
    for password, verdict in (("Short1!", "refused"), ("Xk7#pQ2!mZ9@wL4$vR", "accepted")):
        done = host.run(f"python3 - '{password}' <<'EOF'\n{PWQUALITY_CHECK}\nEOF")
        assert done.rc == 0, done.stderr
        assert done.stdout.strip() == verdict, f"{password!r}: {done.stdout} {done.stderr}"


def test_sudo_uses_a_pty_and_logs_every_command(host: Any) -> None:
    assert host.run("visudo -c").rc == 0
    assert "use_pty" in host.check_output("sudo -n -l")
    marker = f"/bin/echo hardening-{int(time.time())}"
    assert host.run(f"sudo -n {marker}").rc == 0
    # sudo wraps its log entries at 80 columns.
    assert marker in " ".join(host.file(BASE_DEFAULTS["base_sudo_logfile"]).content_string.split())


def test_cron_and_at_are_root_only(host: Any) -> None:
    for name in ("cron", "at"):
        allow = host.file(f"/etc/{name}.allow")
        assert allow.exists and allow.content_string == "root\n" and allow.user == "root"
        assert not host.file(f"/etc/{name}.deny").exists
    crontab = host.file("/etc/crontab")
    if crontab.exists:  # the image has no cron daemon; systemd timers schedule the stack's jobs
        assert crontab.mode == 0o600


def test_home_directories_are_their_owners_alone(host: Any) -> None:
    homes = host.run("find /home -mindepth 1 -maxdepth 1 -type d -printf '%p %m\\n'").stdout.split("\n")
    modes = dict(line.split() for line in homes if line.strip())
    assert modes, "no home directory: the automation account's is expected"
    assert all(int(mode, 8) & 0o027 == 0 for mode in modes.values()), modes


def test_audit_watches_sshd_and_sudoers_drop_ins(host: Any) -> None:
    # Debian 12's auditctl lists a directory watch as written (-w PATH -p wa -k KEY); other versions list it as a
    # syscall rule (-F dir=PATH -F perm=wa -F key=KEY). Either proves the watch is loaded.
    rules = host.check_output("auditctl -l").splitlines()
    for path, key in (("/etc/sudoers.d", "sudoers"), ("/etc/ssh/sshd_config.d", "sshd_config")):
        written = f"-w {path} -p wa -k {key}"
        syscall = (f"dir={path} ", "perm=wa", f"key={key}")
        assert any(r.strip() == written or all(s in r for s in syscall) for r in rules), rules


# --- patching -------------------------------------------------------------------------------------------------------


def test_unattended_upgrades_take_security_and_point_releases(host: Any) -> None:
    dump = host.check_output("apt-config dump | grep '^Unattended-Upgrade::Origins-Pattern'")
    patterns = re.findall(r'"(origin=[^"]+)"', dump)
    assert patterns == [
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
        "origin=Debian,codename=${distro_codename},label=Debian",
        "origin=Debian,codename=${distro_codename}-updates,label=Debian",
    ]
    assert host.service("ai-assistant-reboot-required.timer").is_enabled


def test_reboot_required_metric_follows_debians_marker(host: Any) -> None:
    assert not host.file("/run/reboot-required").exists, "the VM already waits for a reboot: the test proves nothing"
    publish = "systemctl start ai-assistant-reboot-required.service"
    try:
        assert host.run(publish).rc == 0
        assert "node_reboot_required 0" in host.file(str(TEXTFILE)).content_string
        assert host.run(f"touch /run/reboot-required && {publish}").rc == 0
        assert "node_reboot_required 1" in host.file(str(TEXTFILE)).content_string
        # node_exporter serves it, so the NodeRebootRequired rule sees it.
        wait_until(
            lambda: "node_reboot_required 1" in host.run("curl -s http://127.0.0.1:9100/metrics").stdout,
            60,
            "node_reboot_required 1 on node_exporter",
            2,
        )
    finally:
        host.run(f"rm -f /run/reboot-required && {publish}")
    assert "node_reboot_required 0" in host.file(str(TEXTFILE)).content_string


def _samples(text: str, prefix: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(rf"^({prefix}\w*) (\S+)$", text, re.M)}


def textfile_and_node_exporter(
    host: Any, path: Path, prefix: str, done: Callable[[dict[str, float], dict[str, float]], bool], timeout: float = 60
) -> tuple[dict[str, float], dict[str, float]]:
    """The samples named prefix* in a textfile and on node_exporter's page (one command per look), once
    done(file, served) holds or after `timeout`: the caller's assertions then say what was there."""
    deadline = time.monotonic() + timeout
    while True:
        out = host.run(f"cat {path}; echo '#--'; curl -s http://127.0.0.1:9100/metrics | grep '^{prefix}'").stdout
        file_text, _, served_text = out.partition("#--\n")
        file, served = _samples(file_text, prefix), _samples(served_text, prefix)
        if done(file, served) or time.monotonic() > deadline:
            return file, served
        time.sleep(2)


# --- central logs ---------------------------------------------------------------------------------------------------
# The VM is its own log host (the monitoring group): its journal-upload posts to the link on its private address
# (roles/link_tls, mutual TLS with the hand-off's internal CA) in front of journal-remote on loopback, as any other
# host's would.
REMOTE_JOURNALS = "/var/log/journal/remote"
LOG_PORT = 19532
TLS_DIR = "/etc/ssl/ai-assistant"


def _remote_lines(host: Any, tag: str) -> list[str]:
    out = host.run(f"journalctl -D {REMOTE_JOURNALS} _HOSTNAME=testvm -t {tag} --output=cat --no-pager")
    return [line for line in out.stdout.splitlines() if line.strip()]


def test_the_journal_reaches_the_log_host_over_mutual_tls(test_vm: TestVM, host: Any) -> None:
    address = test_vm.private_address()
    assert f"--url=https://{address}:{LOG_PORT}" in host.check_output(
        "systemctl show -p ExecStart --value systemd-journal-upload"
    ), "journal-upload does not post to the link on the private address"
    tag = f"logtest-{int(time.time() * 1000)}"
    assert host.run(f"logger -t {tag} shipped-once").rc == 0
    wait_until(lambda: _remote_lines(host, tag), 120, f"the {tag} line in {REMOTE_JOURNALS}", interval=3)
    assert _remote_lines(host, tag) == ["shipped-once"]
    assert host.service("systemd-journal-upload").is_enabled
    # journal-remote itself is on loopback only; the private address has the link.
    listening = sorted(line.split()[3] for line in host.run(f"ss -Hltn 'sport = :{LOG_PORT}'").stdout.splitlines())
    assert listening == sorted([f"127.0.0.1:{LOG_PORT}", f"{address}:{LOG_PORT}"]), listening
    # Through the link: refused without a client certificate and with one the internal CA did not sign; with the
    # host's own certificate the same request reaches journal-remote (an HTTP status), so the refusals are the
    # certificates', not a broken path.
    probe = f"""set -u
cd "$(mktemp -d)"
url=https://{address}:{LOG_PORT}/upload
printf 'MESSAGE=forged\\n\\n' > entry
post() {{ curl -sS -m 20 -o /dev/null -w '%{{http_code}}' --cacert {TLS_DIR}/internal-ca.crt \\
  -H 'Content-Type: application/vnd.fdo.journal' --data-binary @entry "$@" "$url" 2>/dev/null; echo " rc=$?"; }}
echo "none: $(post)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=testvm -days 1 \\
  -keyout k.pem -out c.pem 2>/dev/null
echo "other-ca: $(post --cert c.pem --key k.pem)"
echo "own: $(curl -sS -m 20 -o /dev/null -w '%{{http_code}}' --cacert {TLS_DIR}/internal-ca.crt \\
  --cert {TLS_DIR}/journal-upload.crt --key {TLS_DIR}/journal-upload.key https://{address}:{LOG_PORT}/; echo " rc=$?")"
"""
    out = host.run(probe).stdout
    results = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert results.get("own", "").endswith(" rc=0") and not results["own"].startswith("000"), out
    for case in ("none", "other-ca"):
        assert "rc=0" not in results.get(case, "rc=0"), f"the link let an upload through ({case}): {out}"
    forged = host.run(f"journalctl -D {REMOTE_JOURNALS} --output=cat --no-pager | grep -c '^forged$'").stdout.strip()
    assert forged == "0", f"a refused upload reached the log host's journal ({forged} lines)"
    # The link writes a connection's line when it closes (the upload's own stays open while it follows the journal):
    # the probe with the host's certificate is there, with the subject nginx verified.
    link = host.run("journalctl -t link_tls --since=-10min --no-pager -o cat").stdout
    assert any(
        f"port={LOG_PORT}" in line and 'client="CN=testvm"' in line and "verify=SUCCESS" in line
        for line in link.splitlines()
    ), link[-2000:]


# --- Redis between hosts ------------------------------------------------------------------------------------------
# The VM is its own data host, and its inventory has no managed Redis: site.yml's data play puts link_tls in front of
# its Redis on the private address, as on a data host that assistant hosts elsewhere reach (issue 23 item 4). Its own
# assistant keeps loopback. The service's own store code, as the service user with its secrets, crosses the link.
REDIS_OVER_THE_LINK = """
import asyncio, json, sys
from pathlib import Path
from ai_assistant.settings import load_settings
from ai_assistant.store.redis import RedisStore

async def attempt(url, ca):
    store = RedisStore(url, ca)
    try:
        await asyncio.wait_for(store.ping(), 30)
        return "connected"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        await store.close()

async def main():
    url = load_settings().store.redis_url.get_secret_value()
    assert url.startswith("redis://") and "@127.0.0.1:" in url, "the VM's own assistant uses loopback"
    plain = url.replace("@127.0.0.1:", "@" + sys.argv[1] + ":")
    linked = plain.replace("redis://", "rediss://", 1)
    ca = Path("/etc/ssl/ai-assistant/internal-ca.crt")
    print(json.dumps({"link": await attempt(linked, ca), "plain": await attempt(plain, None),
                      "no_ca": await attempt(linked, None)}))

asyncio.run(main())
"""


def test_redis_is_reached_from_other_hosts_only_through_its_tls_link(test_vm: TestVM, host: Any) -> None:
    address = test_vm.private_address()
    listening = sorted(line.split()[3] for line in host.run("ss -Hltn4 'sport = :6379'").stdout.splitlines())
    assert listening == sorted(["127.0.0.1:6379", f"{address}:6379"]), listening
    assert "redis-server" in host.run("ss -Hltnp 'src 127.0.0.1 and sport = :6379'").stdout
    assert "nginx" in host.run(f"ss -Hltnp 'src {address} and sport = :6379'").stdout, "not the link on the address"
    ran = test_vm.python(REDIS_OVER_THE_LINK, address, timeout=200)
    out = json.loads(ran.strip().splitlines()[-1])
    # TLS 1.3 with the internal CA's certificate for the address, the ACL user's password inside it.
    assert out["link"] == "connected", out
    # No plaintext path from another host, and no trust but the internal CA's.
    assert out["plain"] != "connected" and out["no_ca"] != "connected", out
    assert "certificate verify failed" in out["no_ca"].lower() or "not trusted" in out["no_ca"], out
    link = host.run("journalctl -t link_tls --since=-10min --no-pager -o cat").stdout
    assert any("port=6379 " in line and "tls=TLSv1.3" in line for line in link.splitlines()), link[-2000:]


def test_the_upload_resumes_after_the_log_host_was_away(host: Any) -> None:
    """What the role's retry settings exist for: Debian's unit gives up after five quick failures. The line written
    while the log host is down arrives once it is back, exactly once. Each failed upload during the outage writes its
    time and count into node_exporter's textfile directory (the drop-in's ExecStopPost; alert LogShippingFailing)."""
    tag = f"logaway-{int(time.time() * 1000)}"
    units = "systemd-journal-remote.socket systemd-journal-remote.service"
    # The guest's clock and the failure count before the outage (no file before the first failure ever).
    now, _, before = host.run(f"date '+%s %Y-%m-%d %H:%M:%S'; cat {UPLOAD_TEXTFILE}").stdout.partition("\n")
    epoch, since = int(now.split(" ", 1)[0]), now.split(" ", 1)[1]
    failures_before = _samples(before, "node_journal_upload_").get("node_journal_upload_failures_total", 0)
    restarts = int(host.check_output("systemctl show -p NRestarts --value systemd-journal-upload"))
    try:
        assert host.run(f"systemctl stop {units}").rc == 0
        assert host.run(f"logger -t {tag} written-while-away").rc == 0
        wait_until(
            lambda: "failed" in host.run(f"journalctl -u systemd-journal-upload --since '{since}' --no-pager").stdout,
            120,
            "journal-upload to notice the log host is away",
            interval=3,
        )
        time.sleep(35)  # past one retry interval (journal_upload_retry_seconds: 30): it must still be retrying
        # Read while the log host is still away: a failure of the outage, written and served.
        file, served = textfile_and_node_exporter(
            host,
            UPLOAD_TEXTFILE,
            "node_journal_upload_",
            lambda f, s: s.get("node_journal_upload_last_failure_timestamp_seconds", 0) >= epoch,
            timeout=30,
        )
    finally:
        assert host.run(f"systemctl start {units}").rc == 0
    stamp = file.get("node_journal_upload_last_failure_timestamp_seconds", 0)
    assert stamp >= epoch, f"no failure written during the outage (since {epoch}): {UPLOAD_TEXTFILE} holds {file}"
    assert file.get("node_journal_upload_failures_total", 0) > failures_before, (
        f"the failure count did not grow from {failures_before}: {file}"
    )
    # Not equal to the file's: the next retry may have failed between the two reads.
    assert served.get("node_journal_upload_last_failure_timestamp_seconds", 0) >= epoch, (
        f"node_exporter serves {served} (the file holds {file})"
    )
    wait_until(lambda: _remote_lines(host, tag), 180, f"the {tag} line after the log host came back", interval=3)
    time.sleep(5)
    assert _remote_lines(host, tag) == ["written-while-away"]
    after = int(host.check_output("systemctl show -p NRestarts --value systemd-journal-upload"))
    print(f"journal-upload restarts while the log host was away: {after - restarts}")
    assert host.service("systemd-journal-upload").is_running


# --- file integrity (AIDE) -----------------------------------------------------------------------------------------

AIDE_DB = "/var/lib/aide/aide.db"
AUDIT_TOOLS = ("auditctl", "auditd", "ausearch", "aureport", "autrace", "augenrules")
# aide hashes every watched file: tens of seconds under emulation, minutes on a busy runner.
AIDE_TIMEOUT_S = 900


def aide_report_lines(report: str) -> list[str]:
    """The summary and the file lines of an aide report (what a failure message needs), without the hashes."""
    head = report.split("Detailed information about changes")[0]
    return [line for line in head.splitlines() if re.match(r"^(  \w.*entries|[fdl][-+ .!=<>a-zA-Z]*: /)", line)]


@pytest.fixture(scope="module")
def aide_baseline(test_vm: TestVM) -> None:
    """site.yml's last play alone (the AIDE baseline). That a converge leaves a baseline the next converge finds
    unchanged is test_vm.py::test_second_converge_changes_nothing (its baseline task would report a change). The tests
    between that converge and these change watched files on purpose (deploys, re-runs, link_tls): this play accepts
    them, as the next converge would."""
    start = time.monotonic()
    baseline = test_vm.play(REPO / "tests/roles/vm/integrity-baseline.yml", name="aide-baseline")
    TIMINGS["aide-baseline"] = time.monotonic() - start
    assert baseline.rc == 0 and baseline.failed == 0, f"aide-baseline failed (log {baseline.log}):\n{baseline.tail()}"


def test_aide_baseline_holds_the_audit_tools_by_their_own_rule(aide_baseline: None, test_vm: TestVM) -> None:
    """cis_6_3_1 and cis_6_3_3: the audit tools' entries, by the database's own column names: the CIS 6.3.3 rule
    (sha512, no times) applies to them, not the broader rule of /usr/sbin (which records times)."""
    out = test_vm.ssh(f"zcat {AIDE_DB} | grep -E '^(@@db_spec|/usr/sbin/au[a-z]+ )'", timeout=120).stdout
    spec = re.search(r"^@@db_spec (.*)$", out, re.M)
    assert spec, out[-2000:]
    columns = spec.group(1).split()
    entries = {
        line.split()[0].rsplit("/", 1)[1]: dict(zip(columns, line.split(), strict=False))
        for line in out.splitlines()
        if line.startswith("/usr/sbin/au")
    }
    for tool in AUDIT_TOOLS:
        entry = entries.get(tool)
        assert entry, f"/usr/sbin/{tool} is not in the AIDE database: {sorted(entries)}"
        assert entry["sha512"] not in ("", "0") and entry["mtime"] == "0" and entry["ctime"] == "0", (tool, entry)


def test_the_daily_aide_check_reports_a_planted_file_and_nothing_else(
    aide_baseline: None, test_vm: TestVM, host: Any
) -> None:
    """cis_6_3_1 and cis_6_3_2: the daily unit itself, its report in the journal, right after a baseline. A new
    program in /usr/local/sbin, removed afterwards (directories are watched without their times, so the removal
    leaves nothing to report), must be the report's only entry: any other difference is a watched file that changes
    by itself (a log, state, a lock), which base_integrity_excludes must leave out. One check run proves both (each
    hashes every watched file: 45-90 s under emulation)."""
    planted = f"/usr/local/sbin/aide-planted-{int(time.time())}"
    epoch, since = host.check_output("date '+%s %Y-%m-%d %H:%M:%S'").split(" ", 1)
    unit = "ai-assistant-aide-check.service"
    # The metric as the test found it (or none), put back afterwards: the planted file is gone again by then, and a
    # difference left on node_exporter would fire FileIntegrityDifferences for the rest of the suite.
    saved = f"{AIDE_TEXTFILE}.before-test"
    try:
        start = time.monotonic()
        run = test_vm.ssh(
            f"rm -f {saved}; [ ! -e {AIDE_TEXTFILE} ] || cp -p {AIDE_TEXTFILE} {saved}; "
            f"printf '#!/bin/sh\\n' > {planted} && chmod 0755 {planted} && systemctl start {unit}; "
            f"echo start-rc=$?; systemctl show -P ExecMainStatus {unit}",
            timeout=AIDE_TIMEOUT_S,
        )
        TIMINGS["aide check unit"] = time.monotonic() - start
        journal = f"journalctl -u {unit} --since '{since}' -o cat --no-pager"
        wait_until(lambda: "Changed entries" in host.run(journal).stdout, 30, "the check's summary in the journal", 2)
        # The unit's ExecStopPost published the outcome, and node_exporter serves it (what the alerts read).
        file, served = textfile_and_node_exporter(
            host,
            AIDE_TEXTFILE,
            "node_aide_check_",
            lambda f, s: s.get("node_aide_check_timestamp_seconds", 0) >= int(epoch),
        )
    finally:
        host.run(f"rm -f {planted}; if [ -e {saved} ]; then mv {saved} {AIDE_TEXTFILE}; else rm -f {AIDE_TEXTFILE}; fi")
    lines = run.stdout.split()
    # aide --check exits with 1 (added) or'ed with 2 and 4 for other differences; the unit fails with it.
    assert "start-rc=0" not in lines and int(lines[-1]) == 1, (run.stdout, run.stderr)
    report = host.run(journal).stdout
    summary = {k: int(v) for k, v in re.findall(r"^\s*(Added|Removed|Changed) entries:\s*(\d+)", report, re.M)}
    files = [line for line in aide_report_lines(report) if re.match(r"^[fdl][-+ .!=<>a-zA-Z]*: /", line)]
    assert summary == {"Added": 1, "Removed": 0, "Changed": 0}, aide_report_lines(report)[:60]
    assert len(files) == 1 and files[0].startswith("f+") and files[0].endswith(f": {planted}"), files
    outcome = {k: file.get(f"node_aide_check_{k}") for k in ("differences", "failed")}
    assert outcome == {"differences": 1, "failed": 0}, f"{AIDE_TEXTFILE} after the check (from {epoch}): {file}"
    assert file.get("node_aide_check_timestamp_seconds", 0) >= int(epoch), f"not this check's: {file}"
    # The converge's declaration (aide_enabled.prom, test_the_daily_aide_check_is_scheduled) shares the prefix.
    served.pop("node_aide_check_enabled", None)
    assert served == file, f"node_exporter serves {served}, the file holds {file}"


def test_the_daily_aide_check_is_scheduled(host: Any) -> None:
    """cis_6_3_2: the role's timer, and Debian's own (which would run its script on a database of its own) masked."""
    out = host.run(
        "systemctl is-enabled ai-assistant-aide-check.timer dailyaidecheck.timer; "
        "systemctl is-active ai-assistant-aide-check.timer"
    ).stdout.split()
    assert out == ["enabled", "masked", "active"], out
    # The converge's last play declared the check, and node_exporter serves it (FileIntegrityCheckNeverRan reads it).
    file, served = textfile_and_node_exporter(
        host, AIDE_TEXTFILE.with_name("aide_enabled.prom"), "node_aide_check_enabled", lambda f, s: bool(s)
    )
    assert file == served == {"node_aide_check_enabled": 1}, (file, served)


# --- certificates ---------------------------------------------------------------------------------------------------


RENEW_DIR = "/etc/ssl/ai-assistant-renew-test"


def _not_after(host: Any) -> str:
    return str(host.check_output(f"openssl x509 -noout -enddate -in {RENEW_DIR}/renew-test.crt"))


def test_internal_ca_re_signs_a_certificate_inside_the_renewal_window(
    test_vm: TestVM, host: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("tls-renew")
    common = {
        "tls_mode": "internal_ca",
        "tls_name": "renew-test",
        "tls_domains": ["renew-test.internal"],
        "tls_dir": RENEW_DIR,
        "tls_reload_services": [],
        "tls_internal_ca_dir": str(work / "ca"),
    }
    playbook = REPO / "tests/roles/vm/tls-renew.yml"

    def play(name: str, **extra: Any) -> Any:
        path = work / f"{name}.json"
        path.write_text(json.dumps(common | extra))
        start = time.monotonic()
        result = test_vm.play(playbook, "-e", f"@{path}", name=name)
        TIMINGS[name] = time.monotonic() - start
        assert result.rc == 0 and result.failed == 0, f"{name} failed (log {result.log}):\n{result.tail()}"
        return result

    try:
        play("tls-renew-short", tls_internal_cert_days=1, tls_internal_renew_days=0)
        short = _not_after(host)
        renewed = play("tls-renew-window", tls_internal_cert_days=397, tls_internal_renew_days=30)
        long = _not_after(host)
        assert long != short, f"the 1-day certificate ({short}) was not re-signed: {renewed.changed_tasks()}"
        assert any("Sign the host certificate" in t for t in renewed.changed_tasks())
        assert host.run(f"openssl x509 -noout -checkend {30 * 86400} -in {RENEW_DIR}/renew-test.crt").rc == 0
        again = play("tls-renew-again", tls_internal_cert_days=397, tls_internal_renew_days=30)
        assert again.changed == 0, f"a fresh certificate was re-signed again: {again.changed_tasks()}"
        assert _not_after(host) == long
    finally:
        host.run(f"rm -rf {RENEW_DIR}")


# --- lynis ----------------------------------------------------------------------------------------------------------

# The audit started right after converge 1 (conftest's test_vm fixture, tests/roles/vm/lynis_audit.py) and ran beside
# the other checks at idle priority; this waits for what is left of it. Under emulation on a busy machine a whole audit
# takes tens of minutes, most of it process starts.
LYNIS_DEADLINE_S = 3000


def lynis_explained() -> dict[str, str]:
    data = yaml.safe_load((REPO / "docs/hardening-controls.yml").read_text(encoding="utf-8"))
    return {str(f["id"]): str(f["why"]) for f in data["lynis"]["findings"]}


@pytest.mark.vm_last
def test_lynis_hardening_index(test_vm: TestVM, host: Any) -> None:
    if not lynis_audit.state(test_vm.ssh):  # a kept VM, or this module alone: no audit was started after converge 1
        lynis_audit.start(test_vm.ssh)
    start = time.monotonic()
    wait_until(lambda: lynis_audit.finished(test_vm.ssh), LYNIS_DEADLINE_S, "the background lynis audit", 20)
    TIMINGS["lynis (waited for)"] = time.monotonic() - start
    unit = lynis_audit.state(test_vm.ssh)
    report = host.file(lynis_audit.REPORT).content_string
    field = dict(re.findall(r"^(\w+)=(.*)$", report, re.M))
    assert unit.get("ExecMainStatus") == "0" and "hardening_index" in field, (unit, report[-2000:])
    index = int(field["hardening_index"])
    found = lynis_audit.findings(report)
    executed = [t for t in field.get("tests_executed", "").split("|") if t]
    skipped = [t for t in field.get("tests_skipped", "").split("|") if t]
    print(
        f"\nlynis {field.get('lynis_version')}: hardening index {index}, {len(found['warning'])} warnings, "
        f"{len(found['suggestion'])} suggestions\n  test set: Debian's default.prf + tests/roles/vm/lynis-vm-suite.prf "
        f"({'; '.join(lynis_audit.profile_lines())}), {len(executed)} tests run, {len(skipped)} skipped\n"
        f"  ran {field.get('report_datetime_start')} - {field.get('report_datetime_end')} (guest clock)"
    )
    for slow in re.findall(r"^slow_test\[\]=(.*)$", report, re.M):
        print(f"  slow test: {slow}")
    explained = lynis_explained()
    unexplained = []
    for kind in ("warning", "suggestion"):
        for line in found[kind]:
            test_id = line.split("|")[0]
            print(f"  {kind}: {line}")
            if test_id not in explained:
                unexplained.append(line)
    assert index >= 80, f"lynis hardening index {index} < 80; warnings: {found['warning']}"
    assert not unexplained, (
        f"lynis findings not explained in docs/hardening-controls.yml (lynis.findings): {unexplained}"
    )
