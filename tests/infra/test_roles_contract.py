"""Contract with roles/: every role variable the stack hands to Ansible exists in that role's argument_specs.

Variables are matched to a role by prefix (redis_password -> roles/redis). ai_assistant_* variables are play-level
switches read by playbooks/, not role options. A role that does not exist yet is reported as a skip, not a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.harness import config_for, run_program, unwrap

ROLES = Path(__file__).resolve().parents[2] / "roles"
PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "site.yml"


def _specs() -> dict[str, dict[str, Any]]:
    out = {}
    for spec in ROLES.glob("*/meta/argument_specs.yml"):
        out[spec.parent.parent.name] = yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
    return out


def _role_of(var: str, roles: list[str]) -> str | None:
    for role in sorted(roles, key=len, reverse=True):
        if var.startswith(f"{role}_"):
            return role
    return None


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_every_role_variable_exists_in_its_argument_specs(cloud: str) -> None:
    specs = _specs()
    if not specs:
        pytest.skip("roles/*/meta/argument_specs.yml do not exist yet")
    run = run_program(config_for(cloud, "standard"))
    inv = yaml.safe_load(run.exports["inventory"][0])["all"]
    names = set(inv["vars"])
    for group in inv["children"].values():
        names |= set(group.get("vars") or {})
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    names |= set(json.loads(env["AI_ASSISTANT_SECRET_VARS"])) - {"internal_ca_key_pem", "internal_ca_cert_pem"}
    unknown, checked = [], []
    for name in sorted(names):
        role = _role_of(name, list(specs))
        if role is None:
            continue
        checked.append(name)
        if name not in specs[role]:
            unknown.append(f"{name} (roles/{role})")
    assert unknown == []
    assert {"redis_password", "firewall_lb_cidrs", "volumes_fs_label", "tls_mode"} <= set(checked)


def test_choices_and_types_match_the_specs() -> None:
    specs = _specs()
    if not {"tls", "weaviate", "redis"} <= set(specs):
        pytest.skip("the tls, weaviate and redis roles do not exist yet")
    inv = yaml.safe_load(run_program(config_for("aws", "enterprise")).exports["inventory"][0])["all"]
    assert inv["vars"]["tls_mode"] in specs["tls"]["tls_mode"]["choices"]
    data = inv["children"]["data"]["vars"]
    assert data["weaviate_tier"] in specs["weaviate"]["weaviate_tier"]["choices"]
    assert set(data["weaviate_memory_limits"]) == set(specs["weaviate"]["weaviate_memory_limits"]["default"])
    assert isinstance(data["redis_maxmemory"], str) and data["redis_maxmemory"].endswith("mb")


def test_the_playbook_uses_the_groups_the_inventory_has() -> None:
    if not PLAYBOOK.exists():
        pytest.skip("playbooks/site.yml does not exist yet")
    plays = yaml.safe_load(PLAYBOOK.read_text())
    wanted = set()
    for play in plays:
        if "hosts" in play:
            wanted |= set(str(play["hosts"]).split(":"))
    inv = yaml.safe_load(run_program(config_for("aws", "basic")).exports["inventory"][0])["all"]
    assert wanted <= set(inv["children"]) | {"all"}, (
        f"groups the playbook names but infra does not export: {wanted - set(inv['children'])}"
    )


ANSIBLE_INVENTORY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ansible-inventory"


@pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="ansible is not installed in .venv")
@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_ansible_reads_the_exported_inventory(cloud: str, tmp_path: Path) -> None:
    """Ansible's own parser, not ours: groups, host addresses and group variables come out as intended."""
    import subprocess

    run = run_program(config_for(cloud, "enterprise"))
    path = tmp_path / "inventory.yml"
    path.write_text(run.exports["inventory"][0])
    env = {"ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    parsed = json.loads(proc.stdout)
    hostvars = parsed["_meta"]["hostvars"]
    assert set(parsed["assistant"]["hosts"]) == {h for h in run.exports["hosts"][0] if h.startswith("assistant")}
    assert len(parsed["data"]["hosts"]) == 2 and parsed["monitoring"]["hosts"] == [sorted(parsed["data"]["hosts"])[0]]
    for host in parsed["data"]["hosts"]:
        assert hostvars[host]["weaviate_tier"] == "enterprise"
        assert hostvars[host]["ansible_become"] is True
        assert "-W %h:%p -q ansible@203.0.113." in hostvars[host]["ansible_ssh_common_args"]
    colour = [g for g in parsed if g.startswith("color_")]
    assert colour == ["color_blue"]
