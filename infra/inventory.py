"""The Ansible inventory the stack exports: groups by role, zone and colour; no secret in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import yaml

from infra.tiers import NodeRole


@dataclass(frozen=True)
class Host:
    """One instance as the hand-off sees it."""

    name: str
    role: NodeRole
    zone: str
    color: str | None  # assistant hosts only: data and inference hosts are shared by both colours
    private_ip: pulumi.Output[str]
    resource: pulumi.Resource


ROLE_GROUPS = ("assistant", "data", "inference")


def _group(name: str) -> str:
    # Ansible group names must be identifiers: zones like cn-hangzhou-h become zone_cn_hangzhou_h.
    return name.replace("-", "_").replace(".", "_")


def render(
    hosts: list[Host],
    ips: list[str],
    all_vars: dict[str, Any],
    bastion_ip: str | None,
    group_vars: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The inventory as YAML, from resolved host addresses (ips[i] belongs to hosts[i])."""
    # Role groups always exist (possibly empty) so that plays and group_vars can name them.
    groups: dict[str, dict[str, Any]] = {g: {"hosts": {}} for g in ROLE_GROUPS}

    def add(group: str, host: str) -> None:
        groups.setdefault(group, {"hosts": {}})["hosts"][host] = None

    hostvars: dict[str, dict[str, Any]] = {}
    for h, ip in zip(hosts, ips, strict=True):
        hostvars[h.name] = {"ansible_host": ip, "ai_assistant_zone": h.zone}
        if h.color:
            hostvars[h.name]["ai_assistant_color"] = h.color
            add(f"color_{h.color}", h.name)
        add(h.role, h.name)
        add(f"zone_{_group(h.zone)}", h.name)
    # Prometheus, Alertmanager and Grafana run on one host: the primary zone's data host (playbooks/monitoring.yml).
    data_hosts = [h for h in hosts if h.role == "data"]
    if data_hosts:
        add("monitoring", data_hosts[0].name)
    for gname, g in groups.items():
        # Host variables sit once, in the host's role group; zone and colour groups only name their members.
        g["hosts"] = {name: hostvars[name] if gname in ROLE_GROUPS else None for name in sorted(g["hosts"])}
        if group_vars and group_vars.get(gname):
            g["vars"] = dict(sorted(group_vars[gname].items()))
    all_vars = dict(sorted(all_vars.items()))
    if bastion_ip:
        # Instances have no public address: Ansible reaches them through the bastion. New hosts' keys are accepted on
        # first contact and pinned after (accept-new), for the bastion hop too, which -o options do not reach with
        # ProxyJump; ansible.cfg keeps host_key_checking on, so a changed key still stops the run.
        user = all_vars.get("ansible_user", "ansible")
        all_vars["ansible_ssh_common_args"] = (
            "-o StrictHostKeyChecking=accept-new "
            f"-o ProxyCommand='ssh -o StrictHostKeyChecking=accept-new -W %h:%p -q {user}@{bastion_ip}'"
        )
    doc = {"all": {"vars": all_vars, "children": dict(sorted(groups.items()))}}
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def inventory_output(
    hosts: list[Host],
    all_vars: dict[str, Any],
    bastion_ip: pulumi.Input[str] | None,
    group_vars: dict[str, dict[str, Any]],
) -> pulumi.Output[str]:
    """An Output[str] with the inventory, resolved once every address is known."""
    ips = pulumi.Output.all(*[h.private_ip for h in hosts])
    bastion = pulumi.Output.from_input(bastion_ip if bastion_ip is not None else "")
    return pulumi.Output.all(ips, bastion, pulumi.Output.from_input(all_vars)).apply(
        lambda a: render(hosts, list(a[0]), dict(a[2]), a[1] or None, group_vars)
    )
