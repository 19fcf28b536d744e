"""The air-gapped proof's switch for the VM harness (issue 22): VM_BUNDLE=DIR runs the one converge from an unpacked
bundle (make bundle) with the guest's egress blocked by its own nftables, except to the test runner.

Off (VM_BUNDLE unset) nothing here runs. The harness (tests/roles/conftest.py) calls, when `bundle_from_env()` is set:
  1. `inventory_vars(bundle)` merged into the host's inventory variables (they win over the harness's wheel paths);
  2. `block_egress(tvm.ssh)` after the VM answers ssh and before the first converge.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ENV = "VM_BUNDLE"
# slirp's address of the machine running QEMU: the runner (reply receiver, and nothing else reachable through it).
RUNNER = "10.0.2.2"

# A table of its own, re-applied by a unit bound to nftables.service: the firewall role's ruleset starts with
# `flush ruleset`, and its reload would otherwise drop this table mid-converge.
EGRESS_NFT = f"""table inet airgap_proof
delete table inet airgap_proof
table inet airgap_proof {{
	chain output {{
		type filter hook output priority filter + 10; policy drop;
		oif "lo" accept
		ct state established,related accept
		ip daddr {RUNNER} accept
		counter comment "egress blocked: the air-gapped proof"
	}}
}}
"""
EGRESS_UNIT = """[Unit]
Description=Air-gapped proof: no egress except to the test runner
After=nftables.service
PartOf=nftables.service
ReloadPropagatedFrom=nftables.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f /etc/airgap-proof.nft
ExecReload=/usr/sbin/nft -f /etc/airgap-proof.nft

[Install]
WantedBy=multi-user.target
"""


def bundle_from_env() -> Path | None:
    """The unpacked bundle VM_BUNDLE names, checked to be one (a clear error rather than a failed converge later)."""
    value = os.environ.get(ENV, "")
    if not value:
        return None
    bundle = Path(value).resolve()
    if not (bundle / "manifest.json").is_file() or not (bundle / "bundle-vars.yml").is_file():
        raise ValueError(f"{ENV}={value}: not an unpacked bundle with wheels and models (make bundle; tar xf ...)")
    return bundle


def inventory_vars(bundle: Path) -> dict[str, Any]:
    """The bundle's own bundle-vars.yml (what an operator passes with -e @), plus where it is and its key."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    variables: dict[str, Any] = yaml.safe_load((bundle / "bundle-vars.yml").read_text())
    variables["ai_assistant_bundle_dir"] = str(bundle)
    variables["ai_assistant_bundle_fingerprint"] = manifest["fingerprint"]
    return variables


# The first mirror host in the guest's own apt sources (never named here): reachable through slirp unless blocked.
MIRROR_PROBE = (
    "host=$(grep -ohE 'https?://[^/ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null "
    '| head -1 | cut -d/ -f3); [ -n "$host" ] || { echo NOSOURCE; exit 0; }; '
    'timeout 10 bash -c "exec 3<>/dev/tcp/$host/80" 2>/dev/null && echo REACHED || echo BLOCKED'
)


def block_egress(ssh: Callable[[str], subprocess.CompletedProcess[str]]) -> str:
    """Install and start the egress block in the guest, then prove it: the guest's Debian mirror must be unreachable.
    Returns what the probe saw before and after, for the run's log."""
    before = ssh(MIRROR_PROBE).stdout.strip()
    script = (
        f"cat >/etc/airgap-proof.nft <<'NFT'\n{EGRESS_NFT}NFT\n"
        f"cat >/etc/systemd/system/airgap-proof.service <<'UNIT'\n{EGRESS_UNIT}UNIT\n"
        "systemctl daemon-reload && systemctl enable --now airgap-proof.service"
    )
    done = ssh(script)
    if done.returncode != 0:
        raise RuntimeError(f"the egress block did not start in the guest: {done.stderr.strip()[-500:]}")
    after = ssh(MIRROR_PROBE).stdout.strip()
    if after != "BLOCKED":
        raise RuntimeError(f"the guest still reaches its Debian mirror with egress blocked: {after!r}")
    return f"Debian mirror from the guest: {before or 'unknown'} before the block, {after} after"


def still_blocked(ssh: Callable[[str], subprocess.CompletedProcess[str]]) -> bool:
    """After the converge: the block survived the firewall role's reloads (call it before the e2e check)."""
    table = ssh("nft list table inet airgap_proof")
    return table.returncode == 0 and ssh(MIRROR_PROBE).stdout.strip() == "BLOCKED"
