"""First-boot user data: only what Ansible needs to get in (docs/adr/0032-cloud-init-minimum.md).

The service account, the data disk mounted by label and an nftables baseline that admits SSH from the given sources.
Packages, hardening, the real firewall and the service belong to the roles; the names used here are the roles'
defaults (checked by tests/infra/test_cloudinit.py).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from infra.config import ADMIN_USER, DATA_LABEL, DATA_MOUNT, SERVICE_ACCOUNT, SERVICE_HOME
from infra.tiers import Cloud

# How the first data disk shows up: EBS on Nitro is NVMe; Alibaba Cloud ECS data disks are virtio.
DATA_DEVICE: dict[Cloud, str] = {"aws": "/dev/nvme1n1", "alicloud": "/dev/vdb"}


# The on-boot configuration (docs/adr/0039-autoscaled-hosts-configure-themselves.md): the script and where it reads
# what to do. The config names the bucket, prefix and secret; the secret itself is read through the instance role.
BOOT_SCRIPT = Path(__file__).with_name("boot_configure.py")
ONBOOT_SCRIPT_PATH = "/usr/local/sbin/ai-assistant-onboot"
ONBOOT_CONFIG_PATH = "/etc/ai-assistant/onboot.json"
# The backup bucket's prefix the hand-off publishes the artifact under; the instance role reads only this prefix.
ONBOOT_PREFIX = "onboot"
ONBOOT_KEYS = ("cloud", "region", "bucket", "prefix", "secret_id", "color", "zone")
# Per cloud: the config's further keys, and the Debian packages the boot script needs before the artifact is there.
# AWS: Debian's boto3. Alibaba Cloud: none (Debian packages no Alibaba Cloud client; the script signs its two requests
# with the standard library) besides the CA bundle its HTTPS requests check the endpoints against.
ONBOOT_CLOUD_KEYS: dict[Cloud, tuple[str, ...]] = {"aws": (), "alicloud": ("ram_role",)}
ONBOOT_PACKAGES: dict[Cloud, tuple[str, ...]] = {
    "aws": ("python3-boto3", "python3-venv", "gpg"),
    "alicloud": ("ca-certificates", "python3-venv", "gpg"),
}


def nftables_baseline(ssh_sources: Sequence[str], https_sources: Sequence[str]) -> str:
    def rule(port: int, sources: Sequence[str]) -> str:
        v4 = [s for s in sources if ":" not in s]
        return f"    ip saddr {{ {', '.join(v4)} }} tcp dport {port} accept\n" if v4 else ""

    return (
        "#!/usr/sbin/nft -f\n"
        "# First-boot baseline from cloud-init; the firewall role replaces this file.\n"
        "flush ruleset\n"
        "table inet filter {\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy drop;\n"
        "    iif lo accept\n"
        "    ct state established,related accept\n"
        "    ct state invalid drop\n"
        "    meta l4proto { icmp, ipv6-icmp } accept\n"
        f"{rule(22, ssh_sources)}"
        f"{rule(443, https_sources)}"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy drop;\n"
        "  }\n"
        "}\n"
    )


def user_data(
    cloud: Cloud,
    *,
    ssh_public_key: str | None,
    ssh_sources: Sequence[str],
    https_sources: Sequence[str] = (),
    data_disk: bool = True,
    onboot: Mapping[str, str] | None = None,
) -> str:
    """The #cloud-config document for one host. Contains no secret: user data is readable from the metadata service."""
    doc: dict[str, object] = {
        "users": [
            {
                "name": SERVICE_ACCOUNT,
                "system": True,
                "shell": "/usr/sbin/nologin",
                "homedir": SERVICE_HOME,
                "lock_passwd": True,
            },
        ],
        "ssh_pwauth": False,
        "disable_root": True,
        "package_update": False,  # the base role pins and installs packages; first boot stays fast and predictable
        "packages": ["nftables"],
        "write_files": [
            {
                "path": "/etc/nftables.conf",
                "owner": "root:root",
                "permissions": "0600",
                "content": nftables_baseline(ssh_sources, https_sources),
            }
        ],
        "runcmd": [
            ["nft", "-c", "-f", "/etc/nftables.conf"],
            ["systemctl", "enable", "--now", "nftables.service"],
        ],
    }
    if ssh_public_key:
        doc["users"] = [
            *doc["users"],  # type: ignore[misc]
            {
                "name": ADMIN_USER,
                "shell": "/bin/bash",
                "groups": ["sudo"],
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [ssh_public_key],
            },
        ]
    if data_disk:
        doc["fs_setup"] = [
            {"device": DATA_DEVICE[cloud], "filesystem": "ext4", "label": DATA_LABEL, "overwrite": False},
        ]
        doc["mounts"] = [[f"LABEL={DATA_LABEL}", DATA_MOUNT, "ext4", "defaults,nofail,noatime", "0", "2"]]
        # The volumes role finds the disk by this label and creates the per-service directories on it.
        doc["runcmd"] = [["mkdir", "-p", DATA_MOUNT], ["mount", "-a"], *doc["runcmd"]]  # type: ignore[misc]
    if onboot is not None:
        _add_onboot(doc, onboot, cloud)
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)


def _add_onboot(doc: dict[str, object], onboot: Mapping[str, str], cloud: Cloud) -> None:
    """The boot script (gzip: user data is capped at 16 KiB on AWS) and its config; run last, after the disk and the
    baseline firewall. The cloud's client packages come first (ONBOOT_PACKAGES); gpg is what roles/base's
    controller-side bundle check runs, and a booting host is its own controller."""
    keys = (*ONBOOT_KEYS, *ONBOOT_CLOUD_KEYS[cloud])
    missing = [k for k in keys if not onboot.get(k)]
    if missing:
        raise ValueError(f"on-boot user data: {', '.join(missing)} missing")
    if onboot["cloud"] != cloud:
        raise ValueError(f"on-boot user data: cloud {onboot['cloud']} on a {cloud} host")
    script = base64.b64encode(gzip.compress(BOOT_SCRIPT.read_bytes(), mtime=0)).decode()
    doc["packages"] = [*doc["packages"], *ONBOOT_PACKAGES[cloud]]  # type: ignore[misc]
    doc["write_files"] = [
        *doc["write_files"],  # type: ignore[misc]
        {
            "path": ONBOOT_SCRIPT_PATH,
            "owner": "root:root",
            "permissions": "0755",
            "encoding": "gz+b64",
            "content": script,
        },
        {
            "path": ONBOOT_CONFIG_PATH,
            "owner": "root:root",
            "permissions": "0600",
            "content": json.dumps({k: onboot[k] for k in keys}, sort_keys=True) + "\n",
        },
    ]
    doc["runcmd"] = [*doc["runcmd"], [ONBOOT_SCRIPT_PATH]]  # type: ignore[misc]
