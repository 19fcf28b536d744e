"""lynis on the converged VM, in the background (issue 23 item 5; docs/hardening.md, "lynis").

lynis is a shell script that starts thousands of short processes; under software emulation each start costs 0.1-0.3 s,
so one audit takes longer than the rest of the VM suite's checks (its first run had not finished in 15 minutes). It
therefore starts right after converge 1 as a transient systemd unit at the guest's idle CPU priority, beside the other
checks, and test_vm_hardening.py::test_lynis_hardening_index waits for it and reads its report near the end of the
suite (before the reboot). The test set is Debian's /etc/lynis/default.prf plus PROFILE, whose every line is explained
in docs/hardening-controls.yml (`lynis.profile`).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

PROFILE = Path(__file__).with_name("lynis-vm-suite.prf")
# Not under /etc: AIDE watches /etc (roles/base), and a file the harness adds there after converge 1 is a difference the
# second converge's baseline would report as a change.
GUEST_PROFILE = "/root/lynis-vm-suite.prf"
UNIT = "ai-assistant-vm-suite-lynis"
REPORT = "/var/log/lynis-report.dat"

Ssh = Callable[[str], subprocess.CompletedProcess[str]]


def start(ssh: Ssh) -> None:
    """Start the audit in the background; the unit stays (RemainAfterExit) so its exit status can be read."""
    profile = PROFILE.read_text(encoding="utf-8")
    command = (
        f"umask 077 && cat > {GUEST_PROFILE} <<'EOF'\n{profile}EOF\n"
        f"rm -f {REPORT} && systemd-run --unit={UNIT} --remain-after-exit"
        " -p CPUSchedulingPolicy=idle -p IOSchedulingClass=idle"
        f" lynis audit system --quick --no-colors --profile {GUEST_PROFILE}"
    )
    done = ssh(command)
    if done.returncode != 0:
        raise RuntimeError(f"could not start lynis in the guest: {done.stderr.strip()}")


def state(ssh: Ssh) -> dict[str, str]:
    """The unit's ActiveState, SubState, ExecMainStatus and ExecMainStartTimestamp ({} when there is no such unit)."""
    done = ssh(f"systemctl show {UNIT} -p LoadState,ActiveState,SubState,ExecMainStatus,ExecMainStartTimestamp")
    found = dict(line.partition("=")[::2] for line in done.stdout.splitlines() if "=" in line)
    return {} if found.get("LoadState") != "loaded" else found


def finished(ssh: Ssh) -> bool:
    return state(ssh).get("SubState") in {"exited", "failed", "dead"}


def profile_lines() -> list[str]:
    """The profile's settings (comments and blank lines left out), as docs/hardening-controls.yml lists them."""
    lines = PROFILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def findings(report: str) -> dict[str, list[str]]:
    """lynis's warning[] and suggestion[] lines (`TEST-ID|text|details|solution|`), by kind."""
    return {kind: re.findall(rf"^{kind}\[\]=(.*)$", report, re.M) for kind in ("warning", "suggestion")}
