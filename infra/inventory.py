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
    # The host's SSH host public key ("ssh-ed25519 AAAA..."), known before first boot: Pulumi generates the key pair
    # and cloud-init installs it. None: unknown, the first contact accepts and pins whatever the host shows.
    host_key: pulumi.Output[str] | None = None


# Where the hand-off writes the pinned host keys: next to the inventory file, unless the writer sets a path.
KNOWN_HOSTS_VAR = "ai_assistant_known_hosts"


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
    keys_known: bool = False,
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
    all_vars.setdefault(KNOWN_HOSTS_VAR, "{{ inventory_dir }}/known_hosts")
    all_vars["ansible_ssh_common_args"] = ssh_args(all_vars.get("ansible_user", "ansible"), bastion_ip, keys_known)
    doc = {"all": {"vars": all_vars, "children": dict(sorted(groups.items()))}}
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def ssh_args(user: str, bastion_ip: str | None, keys_known: bool) -> str:
    """SSH options for every host: the hand-off's own known_hosts file, checked strictly when Pulumi knows every key.

    Instances have no public address: Ansible reaches them through the bastion with a ProxyCommand, which carries the
    same options because -o options do not reach the inner hop (nor does ProxyJump take them). ansible.cfg keeps
    host_key_checking on either way, so a changed key stops the run; accept-new only for keys nobody could know."""
    check = "yes" if keys_known else "accept-new"
    opts = f"-o StrictHostKeyChecking={check} -o UserKnownHostsFile={{{{ {KNOWN_HOSTS_VAR} }}}}"
    if not bastion_ip:
        return opts
    return f"{opts} -o ProxyCommand='ssh {opts} -W %h:%p -q {user}@{bastion_ip}'"


def known_hosts(entries: list[tuple[str, str | None]]) -> str:
    """known_hosts lines ("address key") for the (address, public key) pairs whose key is known."""
    return "".join(f"{addr} {key.strip()}\n" for addr, key in entries if addr and key)


def known_hosts_output(
    hosts: list[Host], bastion_ip: pulumi.Input[str] | None, bastion_key: pulumi.Input[str] | None
) -> pulumi.Output[str]:
    """The known_hosts text for the hosts and the bastion, from the keys Pulumi generated (plain: public keys)."""
    pairs = [pulumi.Output.all(h.private_ip, h.host_key if h.host_key is not None else "") for h in hosts]
    pairs.append(pulumi.Output.all(bastion_ip or "", bastion_key or ""))
    return pulumi.Output.all(*pairs).apply(lambda ps: known_hosts([(str(a), str(k) or None) for a, k in ps]))


def inventory_output(
    hosts: list[Host],
    all_vars: dict[str, Any],
    bastion_ip: pulumi.Input[str] | None,
    group_vars: dict[str, dict[str, Any]],
    keys_known: bool = False,
) -> pulumi.Output[str]:
    """An Output[str] with the inventory, resolved once every address is known."""
    ips = pulumi.Output.all(*[h.private_ip for h in hosts])
    bastion = pulumi.Output.from_input(bastion_ip if bastion_ip is not None else "")
    return pulumi.Output.all(ips, bastion, pulumi.Output.from_input(all_vars)).apply(
        lambda a: render(hosts, list(a[0]), dict(a[2]), a[1] or None, group_vars, keys_known)
    )
