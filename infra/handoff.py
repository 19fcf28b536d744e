"""Hand-off to Ansible: one `pulumi up` provisions and then configures (docs/adr/0033-ansible-handoff.md).

A pulumi-command ``local.Command`` runs infra/ansible_handoff.sh from the repository root. Secrets travel only in
the command's environment, which is a Pulumi secret (encrypted in state, masked in logs); the script writes them to
a 0600 vars file in a private temporary directory and gives Ansible the file's path, never the values, on argv.
The triggers are digests of roles/, playbooks/, ansible.cfg and the inventory, so a change to any of them
replaces the command, which runs the playbook again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import local

SCRIPT = "infra/ansible_handoff.sh"
PLAYBOOK = "playbooks/site.yml"
CONFIG_PATHS = ("roles", "playbooks", "ansible.cfg")
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ansible", ".cache"}


def tree_digest(root: Path, paths: tuple[str, ...] = CONFIG_PATHS) -> str:
    """sha256 over the relative names and bytes of every file under the given paths (sorted, so stable)."""
    h = hashlib.sha256()
    for rel in paths:
        base = root / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for f in files:
            if _SKIP_DIRS.intersection(f.relative_to(root).parts) or f.suffix == ".pyc":
                continue
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class AnsibleHandoff(pulumi.ComponentResource):
    """Runs playbooks/site.yml against the exported inventory once the hosts exist."""

    command: local.Command
    triggers: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        repo_root: Path,
        inventory: pulumi.Output[str],
        secret_vars: pulumi.Output[dict[str, Any]],
        dynamic_inventory: pulumi.Output[str] | None,
        dynamic_hosts: int,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:config:AnsibleHandoff", name, None, opts)
        roles = tree_digest(repo_root)
        dumped: pulumi.Output[str] = secret_vars.apply(lambda v: json.dumps(v, sort_keys=True))
        secrets_json: pulumi.Output[str] = pulumi.Output.secret(dumped)
        env: dict[str, pulumi.Input[str]] = {
            "AI_ASSISTANT_INVENTORY": inventory,
            "AI_ASSISTANT_SECRET_VARS": secrets_json,
            "AI_ASSISTANT_PLAYBOOK": PLAYBOOK,
            "ANSIBLE_CONFIG": str(repo_root / "ansible.cfg"),
        }
        if dynamic_inventory is not None:
            env["AI_ASSISTANT_DYNAMIC_INVENTORY"] = dynamic_inventory
            env["AI_ASSISTANT_DYNAMIC_HOSTS"] = str(dynamic_hosts)
        # Plain digests for the inventory and roles; the secrets' digest stays secret so rotation re-runs the play.
        self.triggers = pulumi.Output.all(
            roles,
            inventory.apply(_sha256),
            (dynamic_inventory or pulumi.Output.from_input("")).apply(_sha256),
        )
        self.command = local.Command(
            name,
            create=f"bash {SCRIPT}",
            update=f"bash {SCRIPT}",
            dir=str(repo_root),
            environment=pulumi.Output.secret(env),
            triggers=self.triggers,
            logging=local.Logging.STDOUT_AND_STDERR,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on,
                # Ansible's output is no_log-clean, but it is still kept encrypted in state, like the environment.
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )
        self.register_outputs({"triggers": self.triggers})
