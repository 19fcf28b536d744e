"""The VM suite converges through Mitogen (docs/adr/0113-converges-through-mitogen.md); operators converge over
Ansible's ssh connection. What differs between the two is how files, scripts and privileges reach the host, not the
modules, so tests/roles/vm/ssh-transport.yml runs over ssh each connection-dependent thing the roles do. This keeps
that play whole: a role task that needs the connection in a way the play does not exercise fails here, naming the
task, until the play does it too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from airgap.apt import flat_tasks

REPO = Path(__file__).resolve().parents[2]
PROOF = REPO / "tests/roles/vm/ssh-transport.yml"

# Modules whose action plugin moves bytes over the connection (a file, a script, rsync's own ssh, a read-back) or
# drives the connection itself. Every other module is one module run, which the play's plain tasks cover.
TRANSFERS = {
    "copy", "template", "unarchive", "script", "synchronize", "slurp", "fetch", "assemble", "patch", "raw",
    "reboot", "wait_for_connection",
}  # fmt: skip
# Keywords that change who runs a task where: each must appear in the play before a role may use it.
KEYWORDS = ("become_user", "become_method", "async", "connection", "remote_user", "delegate_to")


def _transfer(task: dict[str, Any]) -> tuple[str, Any] | None:
    """The task's transferring module (short name) and its arguments, if it has one."""
    for key, args in task.items():
        short = key.rsplit(".", 1)[-1]
        if short in TRANSFERS:
            return short, args
    return None


def features(task: dict[str, Any]) -> set[str]:
    """What a task asks of the connection, in words a failure message can show."""
    found = set()
    transfer = _transfer(task)
    if transfer is not None:
        module, args = transfer
        # A copy or unarchive of a file already on the host moves nothing over the connection.
        if not (isinstance(args, dict) and args.get("remote_src")):
            found.add(f"module {module}")
    for key in KEYWORDS:
        if key in task:
            found.add(f"{key}: {task[key]}")
    if task.get("become") is False:
        found.add("become: false" + (f" on {task['delegate_to']}" if "delegate_to" in task else " on the host"))
    return found


def role_tasks() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted([*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/handlers/*.yml")]):
        for task in flat_tasks(yaml.safe_load(path.read_text())):
            out.append((f"{path.relative_to(REPO)}: {task.get('name')!r}", task))
    for path in sorted(REPO.glob("playbooks/*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                for task in flat_tasks(play.get(section)):
                    out.append((f"{path.relative_to(REPO)}: {task.get('name')!r}", task))
    return out


def proof_features() -> set[str]:
    found: set[str] = set()
    for play in yaml.safe_load(PROOF.read_text()):
        for section in ("tasks", "handlers"):
            for task in flat_tasks(play.get(section)):
                found |= features(task)
    return found


def test_the_ssh_play_does_every_connection_dependent_thing_the_roles_do() -> None:
    covered = proof_features()
    missing = [f"{where}: {feature}" for where, task in role_tasks() for feature in sorted(features(task) - covered)]
    assert not missing, f"run these over ssh in {PROOF.relative_to(REPO)} too: {missing}"


def test_the_walk_sees_what_the_roles_transfer() -> None:
    """The walk above finds the roles' transfers (a scan that found nothing would pass whatever the roles did)."""
    seen = set().union(*(features(task) for _, task in role_tasks()))
    for expected in ("module template", "module copy", "module unarchive", "module synchronize", "module slurp"):
        assert expected in seen, expected
    assert "become: false on localhost" in seen and "delegate_to: localhost" in seen


def test_a_new_kind_of_transfer_is_caught() -> None:
    """A role task the play does not cover (become_user, a fetch, become: false on the host) is reported."""
    covered = proof_features()
    for task in (
        {"name": "x", "ansible.builtin.command": "id", "become_user": "assistant"},
        {"name": "x", "ansible.builtin.fetch": {"src": "/etc/hosts", "dest": "/tmp"}},
        {"name": "x", "ansible.builtin.command": "id", "become": False},
    ):
        assert features(task) - covered, task
    # ...while a copy of a file already on the host moves nothing and needs nothing from the play.
    assert not features({"ansible.builtin.copy": {"src": "/a", "dest": "/b", "remote_src": True}})
