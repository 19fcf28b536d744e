"""The Ansible hand-off: skippable, re-run when roles or variables change, secrets only via a 0600 file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.handoff import tree_digest
from tests.infra.harness import config_for, run_program, unwrap

ROOT = Path(__file__).resolve().parents[2]


def _triggers(run: object) -> list[str]:
    cmd = run.of("command:local:Command")  # type: ignore[attr-defined]
    assert len(cmd) == 1
    return list(cmd[0].props["triggers"])


def test_handoff_false_declares_no_command() -> None:
    run = run_program(config_for("aws", "basic", handoff=False))
    assert run.of("command:local:Command") == []
    assert "inventory" in run.exports  # still exported for a manual `ansible-playbook -i`


def test_command_runs_the_script_with_secrets_only_in_its_environment() -> None:
    run = run_program(config_for("aws", "basic"))
    cmd = run.of("command:local:Command")[0]
    assert cmd.props["create"] == cmd.props["update"] == "bash infra/ansible_handoff.sh"
    env = unwrap(cmd.inputs["environment"])
    assert set(env) == {"AI_ASSISTANT_INVENTORY", "AI_ASSISTANT_SECRET_VARS", "AI_ASSISTANT_PLAYBOOK", "ANSIBLE_CONFIG"}
    assert set(json.loads(env["AI_ASSISTANT_SECRET_VARS"])) >= {
        "redis_password",
        "weaviate_api_key",
        "assistant_admin_token",
        "alertmanager_assistant_token",
        "grafana_admin_password",
        "internal_ca_key_pem",
        "internal_ca_cert_pem",
    }
    deps = {r.name for r in run.resources if r.typ == "aws:ec2/instance:Instance"}
    assert deps  # the command waits for these through depends_on (checked by Pulumi, not the mock)


def _copy_config_tree(dst: Path) -> None:
    for rel in ("roles", "playbooks"):
        if (ROOT / rel).is_dir():
            shutil.copytree(ROOT / rel, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / rel).mkdir(parents=True)
    if (ROOT / "ansible.cfg").exists():
        shutil.copy(ROOT / "ansible.cfg", dst / "ansible.cfg")


def test_triggers_change_when_roles_change(tmp_path: Path) -> None:
    _copy_config_tree(tmp_path)
    before = _triggers(run_program(config_for("aws", "basic"), repo_root=tmp_path))
    assert before == _triggers(run_program(config_for("aws", "basic"), repo_root=tmp_path)), "stable without changes"
    (tmp_path / "roles" / "example" / "defaults").mkdir(parents=True)
    (tmp_path / "roles" / "example" / "defaults" / "main.yml").write_text("example_x: 1\n")
    after_new_file = _triggers(run_program(config_for("aws", "basic"), repo_root=tmp_path))
    assert after_new_file[0] != before[0]
    (tmp_path / "roles" / "example" / "defaults" / "main.yml").write_text("example_x: 2\n")
    after_edit = _triggers(run_program(config_for("aws", "basic"), repo_root=tmp_path))
    assert after_edit[0] != after_new_file[0]
    assert after_edit[1:] == before[1:]


def test_triggers_change_when_variables_change(tmp_path: Path) -> None:
    _copy_config_tree(tmp_path)  # a frozen copy: roles/ in the work tree may change while this runs
    base = _triggers(run_program(config_for("aws", "basic"), repo_root=tmp_path))
    other = _triggers(run_program(config_for("aws", "basic", backupRetentionDays=45), repo_root=tmp_path))
    assert other[0] == base[0] and other[1] != base[1]
    receivers = [{"name": "x", "email": "x@example.com"}]
    alert = _triggers(run_program(config_for("aws", "basic", alertReceivers=receivers), repo_root=tmp_path))
    assert alert[1] != base[1]


def test_tree_digest_ignores_caches(tmp_path: Path) -> None:
    (tmp_path / "roles" / "r" / "__pycache__").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "a.yml").write_text("a: 1\n")
    d = tree_digest(tmp_path)
    (tmp_path / "roles" / "r" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert tree_digest(tmp_path) == d


ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is not installed in this virtualenv")
def test_script_hands_secrets_to_ansible_through_a_private_file(tmp_path: Path) -> None:
    """Runs infra/ansible_handoff.sh for real, with real Ansible on a local-connection host."""
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "ansible_handoff.sh", repo / "infra")
    report = tmp_path / "report.json"
    (repo / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.stat: {path: '{{ tls_internal_ca_dir }}/ca.key'}\n      register: key\n"
        "    - ansible.builtin.copy:\n        dest: " + str(report) + "\n"
        '        content: \'{{ {"mode": key.stat.mode, "dir": tls_internal_ca_dir,'
        ' "redis_ok": redis_password == "r3dis-pass"} | to_json }}\'\n'
    )
    inventory = (
        "all:\n  hosts:\n    local:\n      ansible_connection: local\n      ansible_python_interpreter: "
        + sys.executable
        + "\n"
    )
    secrets = {"redis_password": "r3dis-pass", "internal_ca_key_pem": "KEY", "internal_ca_cert_pem": "CERT"}
    env = {
        **os.environ,
        "AI_ASSISTANT_INVENTORY": inventory,
        "AI_ASSISTANT_SECRET_VARS": json.dumps(secrets),
        "AI_ASSISTANT_PLAYBOOK": "site.yml",
        "PYTHON": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.run(
        ["bash", "infra/ansible_handoff.sh"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "r3dis-pass" not in proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    assert result == {"mode": "0600", "dir": result["dir"], "redis_ok": True}
    assert not Path(result["dir"]).exists(), "the private directory is removed after the run"


def test_script_refuses_a_missing_playbook(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    shutil.copy(ROOT / "infra" / "ansible_handoff.sh", tmp_path / "infra")
    env = {
        **os.environ,
        "AI_ASSISTANT_INVENTORY": "all: {}\n",
        "AI_ASSISTANT_SECRET_VARS": json.dumps({"internal_ca_key_pem": "K", "internal_ca_cert_pem": "C"}),
        "AI_ASSISTANT_PLAYBOOK": "nope.yml",
        "PYTHON": sys.executable,
    }
    proc = subprocess.run(
        ["bash", "infra/ansible_handoff.sh"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ansible hand-off: nope.yml not found; set handoff: false or add the playbook"


def _fake_ansible(tmp_path: Path, hosts_listed: int, inventory_rc: int = 0) -> tuple[Path, Path]:
    """A bin directory whose ansible, ansible-inventory and ansible-playbook only log the inventory files they get
    (name and content), so the script's handling of a dynamic source can be checked without a cloud account."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    log = tmp_path / "calls.log"
    logger = (
        "#!/usr/bin/env bash\n"
        'while [ $# -gt 0 ]; do if [ "$1" = -i ]; then\n'
        f'  printf "%s %s %s\\n" "$(basename "$0")" "$(basename "$2")" "$(head -c 60 "$2" | tr -d "\\n ")" >> {log}\n'
        "  shift; fi; shift; done\n"
    )
    for tool in ("ansible", "ansible-playbook"):
        (bin_dir / tool).write_text(logger)
    hostvars = json.dumps({"_meta": {"hostvars": {f"i-{n}": {} for n in range(hosts_listed)}}})
    (bin_dir / "ansible-inventory").write_text(
        logger
        + f'[ "$ANSIBLE_INVENTORY_UNPARSED_FAILED" = true ] || exit 9\nexit_code={inventory_rc}\n'
        + f"[ $exit_code -eq 0 ] || {{ echo 'unknown plugin' >&2; exit $exit_code; }}\necho '{hostvars}'\n"
    )
    for tool in ("ansible", "ansible-playbook", "ansible-inventory"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir, log


def _run_with_dynamic_inventory(
    tmp_path: Path, cloud: str, hosts_listed: int, *, inventory_rc: int = 0, wait_s: int = 900
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    run = run_program(config_for(cloud, "basic", autoscaling=True))
    env_in = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "ansible_handoff.sh", repo / "infra")
    (repo / "site.yml").write_text("- hosts: all\n")
    bin_dir, log = _fake_ansible(tmp_path, hosts_listed, inventory_rc)
    env = {
        **os.environ,
        "AI_ASSISTANT_INVENTORY": "all: {}\n",
        "AI_ASSISTANT_SECRET_VARS": json.dumps({"internal_ca_key_pem": "K", "internal_ca_cert_pem": "C"}),
        "AI_ASSISTANT_PLAYBOOK": "site.yml",
        "AI_ASSISTANT_DYNAMIC_INVENTORY": env_in["AI_ASSISTANT_DYNAMIC_INVENTORY"],
        "AI_ASSISTANT_DYNAMIC_HOSTS": env_in["AI_ASSISTANT_DYNAMIC_HOSTS"],
        "AI_ASSISTANT_DYNAMIC_WAIT_S": str(wait_s),
        "PYTHON": str(bin_dir / "python"),
    }
    proc = subprocess.run(
        ["bash", "infra/ansible_handoff.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return proc, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(
    ("cloud", "file_name", "plugin"),
    [
        ("aws", "autoscaled.aws_ec2.yml", "amazon.aws.aws_ec2"),
        ("alicloud", "autoscaled.alicloud.yml", "alibaba.alicloud.alicloud_ecs"),
    ],
)
def test_script_names_the_dynamic_source_for_its_plugin_and_waits_for_its_hosts(
    tmp_path: Path, cloud: str, file_name: str, plugin: str
) -> None:
    proc, calls = _run_with_dynamic_inventory(tmp_path, cloud, hosts_listed=2)  # basic: 1 host x 2 zones
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dynamic = [c.split(" ", 2) for c in calls if "inventory.yml" not in c]
    assert [d[0] for d in dynamic] == ["ansible-inventory", "ansible", "ansible-playbook"]
    assert all(d[1] == file_name and f'"plugin":"{plugin}"' in d[2] for d in dynamic), dynamic
    assert [c.split(" ")[0] for c in calls if " inventory.yml " in c] == ["ansible", "ansible-playbook"]


def test_script_stops_when_the_scaling_groups_hosts_do_not_appear(tmp_path: Path) -> None:
    proc, calls = _run_with_dynamic_inventory(tmp_path, "aws", hosts_listed=1, wait_s=0)
    assert proc.returncode == 3
    assert proc.stderr.strip() == "ansible hand-off: the autoscaled inventory lists 1 of 2 hosts"
    assert not any(c.startswith(("ansible ", "ansible-playbook ")) for c in calls)


def test_script_stops_when_the_dynamic_source_cannot_be_read(tmp_path: Path) -> None:
    """E.g. the plugin's collection or Python library is missing: Ansible alone would skip the source and go on."""
    proc, calls = _run_with_dynamic_inventory(tmp_path, "aws", hosts_listed=2, inventory_rc=1)
    assert proc.returncode != 0
    assert "unknown plugin" in proc.stderr
    assert not any(c.startswith(("ansible ", "ansible-playbook ")) for c in calls)
