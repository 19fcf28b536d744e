"""The air-gapped proof (issue 22): CI's one converge of the VM runs from a bundle (`make bundle`) with the guest's
egress blocked by its own nftables, except to the test runner. The harness (tests/roles/conftest.py) builds the bundle
beside the VM's boot (`start_build`, then `unpacked`), passes it to every play as an operator does (`play_args`), and
blocks the guest's egress before the first converge (`block_egress`); test_vm.py checks the block outlived the
converge (`still_blocked`).

VM_BUNDLE=DIR uses an unpacked bundle built earlier instead of building one (a developer's quicker iteration).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
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


def start_build(workdir: Path) -> subprocess.Popen[bytes]:
    """`make bundle`'s build (wheels, model, APT repository; no controller wheels or images: the runner is the
    controller), started in the background so it runs beside the VM's boot. About 1.5 min with warm caches."""
    out = workdir / "bundle-build"
    out.mkdir(parents=True, exist_ok=True)
    with (workdir / "build-bundle.log").open("ab") as log:
        return subprocess.Popen(
            [str(REPO / "scripts" / "build-bundle"), "--out", str(out), "--parts", "wheels,models,apt"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHON": sys.executable},
        )


def unpacked(build: subprocess.Popen[bytes], workdir: Path, timeout: float = 2400) -> Path:
    """Wait for the build and unpack its archive where an operator would (not in the build's own directory)."""
    if build.wait(timeout=timeout) != 0:
        log = (workdir / "build-bundle.log").read_text(errors="replace")
        raise RuntimeError(f"build-bundle failed ({workdir / 'build-bundle.log'}):\n{log[-3000:]}")
    archive = next((workdir / "bundle-build").glob("ai-assistant-bundle-*.tar"))
    dest = workdir / "bundle"
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()  # hundreds of MB; the unpacked copy is what the roles read
    return next(dest.glob("ai-assistant-bundle-*"))


def play_args(bundle: Path) -> list[str]:
    """What the bundle's README tells an operator to pass: its variables, where it is, and its key's fingerprint."""
    fingerprint = json.loads((bundle / "manifest.json").read_text())["fingerprint"]
    return [
        "-e", f"@{bundle / 'bundle-vars.yml'}",
        "-e", f"ai_assistant_bundle_dir={bundle}",
        "-e", f"ai_assistant_bundle_fingerprint={fingerprint}",
    ]  # fmt: skip


def artifacts(bundle: Path) -> dict[str, Path]:
    """The service wheel, wheelhouse and model the hand-off names: the bundle's own."""
    return {
        "wheel": next((bundle / "wheels").glob("ai_assistant-*.whl")),
        "wheelhouse": bundle / "wheels",
        "gguf": next((bundle / "models").glob("*.gguf")),
    }


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
