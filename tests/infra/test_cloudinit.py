"""First-boot user data: valid cloud-config, the minimum only, and the same names as the Ansible roles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import cloudinit
from infra.config import DATA_LABEL, DATA_MOUNT, SERVICE_ACCOUNT, SERVICE_HOME
from tests.infra.harness import SSH_KEY

ROLES = Path(__file__).resolve().parents[2] / "roles"


def _doc(cloud: str = "aws", **kw: object) -> dict[str, object]:
    text = cloudinit.user_data(cloud, ssh_public_key=SSH_KEY, ssh_sources=["10.40.0.0/20"], **kw)  # type: ignore[arg-type]
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def _defaults(role: str) -> dict[str, object]:
    path = ROLES / role / "defaults" / "main.yml"
    if not path.exists():
        pytest.skip(f"roles/{role}/defaults/main.yml does not exist yet; nothing to compare with")
    return yaml.safe_load(path.read_text())


def test_names_match_the_roles_defaults() -> None:
    base = _defaults("base")
    accounts = {a["name"]: a for a in base["base_service_accounts"]}  # type: ignore[index, union-attr]
    assert SERVICE_ACCOUNT in accounts
    assert accounts[SERVICE_ACCOUNT]["home"] == SERVICE_HOME
    volumes = _defaults("volumes")
    assert volumes["volumes_mount_point"] == DATA_MOUNT
    assert volumes["volumes_fs_label"] == DATA_LABEL


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_user_data_does_only_the_minimum(cloud: str) -> None:
    doc = _doc(cloud)
    users = {u["name"]: u for u in doc["users"]}  # type: ignore[attr-defined]
    svc = users[SERVICE_ACCOUNT]
    assert svc["system"] is True and svc["shell"] == "/usr/sbin/nologin" and svc["lock_passwd"] is True
    admin = users["ansible"]
    assert admin["ssh_authorized_keys"] == [SSH_KEY] and admin["lock_passwd"] is True
    assert doc["ssh_pwauth"] is False and doc["disable_root"] is True
    assert doc["fs_setup"] == [
        {"device": cloudinit.DATA_DEVICE[cloud], "filesystem": "ext4", "label": DATA_LABEL, "overwrite": False}
    ]
    assert doc["mounts"][0][:2] == [f"LABEL={DATA_LABEL}", DATA_MOUNT]  # type: ignore[index]
    assert "nofail" in doc["mounts"][0][3]  # type: ignore[index]
    # Everything else (packages, hardening, services) is the roles' job.
    assert doc["packages"] == ["nftables"]
    assert set(doc) == {
        "users",
        "ssh_pwauth",
        "disable_root",
        "package_update",
        "packages",
        "write_files",
        "runcmd",
        "fs_setup",
        "mounts",
    }


def test_nftables_baseline_admits_ssh_only_from_the_given_sources() -> None:
    rules = cloudinit.nftables_baseline(["198.51.100.0/24"], [])
    assert "policy drop;" in rules
    assert "ip saddr { 198.51.100.0/24 } tcp dport 22 accept" in rules
    assert "dport 443" not in rules
    assert "dport 22 accept" not in cloudinit.nftables_baseline([], [])


def test_bastion_user_data_has_no_data_disk() -> None:
    doc = yaml.safe_load(
        cloudinit.user_data("aws", ssh_public_key=SSH_KEY, ssh_sources=["198.51.100.0/24"], data_disk=False)
    )
    assert "fs_setup" not in doc and "mounts" not in doc


def test_nftables_baseline_parses_with_nft() -> None:
    nft = shutil.which("nft") or (Path("/usr/sbin/nft") if Path("/usr/sbin/nft").exists() else None)
    if not nft:
        pytest.skip("nft (Debian package nftables) is not installed here; the VM role tests load the real ruleset")
    rules = cloudinit.nftables_baseline(["198.51.100.0/24", "10.40.0.0/20"], ["10.40.0.0/20"])
    # -c only checks; inside a fresh network namespace so the host's ruleset is never touched.
    proc = subprocess.run(
        ["unshare", "-n", str(nft), "-c", "-f", "-"], input=rules, text=True, capture_output=True, check=False
    )
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("no permission to create a network namespace here")
    assert proc.returncode == 0, proc.stderr
