"""The Ansible hand-off: skippable, re-run when roles or variables change, secrets only via a 0600 file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airgap.wheels import UV_VERSION
from infra.handoff import HandoffFiles, tree_digest
from infra.tiers import CATALOGUE
from tests.infra.harness import config_for, run_program, unwrap

ROOT = Path(__file__).resolve().parents[2]
# ansible-core's line for the argument check it prepends to every role with meta/argument_specs.yml.
ROLE_VALIDATION = re.compile(r"TASK \[(\w+) : Validating arguments against arg spec")


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
    assert set(env) == {
        "AI_ASSISTANT_INVENTORY",
        "AI_ASSISTANT_SECRET_VARS",
        "AI_ASSISTANT_PLAYBOOK",
        "ANSIBLE_CONFIG",
        "AI_ASSISTANT_KNOWN_HOSTS",
    }
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


def _repo_with_script(repo: Path) -> None:
    """A repository root with the hand-off script and the infra package it runs (`python -m infra.handoff`)."""
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "infra", repo / "infra", ignore=shutil.ignore_patterns("__pycache__"))


def _wheel_env(tmp_path: Path) -> dict[str, str]:
    """A stand-in wheel and wheelhouse: these tests check the script, not the wheel build (test_build_wheel does)."""
    wheel = tmp_path / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    (tmp_path / "wheelhouse").mkdir(exist_ok=True)
    # uv's wheel, which the roles install with (an empty stand-in, as the service's).
    (tmp_path / "wheelhouse" / f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.whl").write_bytes(b"")
    return {"AI_ASSISTANT_WHEEL": str(wheel), "AI_ASSISTANT_WHEELHOUSE": str(tmp_path / "wheelhouse")}


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is not installed in this virtualenv")
def test_script_hands_secrets_to_ansible_through_a_private_file(tmp_path: Path) -> None:
    """Runs infra/ansible_handoff.sh for real, with real Ansible on a local-connection host."""
    repo = tmp_path / "repo"
    _repo_with_script(repo)
    report = tmp_path / "report.json"
    (repo / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.stat: {path: '{{ tls_internal_ca_dir }}/ca.key'}\n      register: key\n"
        "    - ansible.builtin.copy:\n        dest: " + str(report) + "\n"
        '        content: \'{{ {"mode": key.stat.mode, "dir": tls_internal_ca_dir,'
        ' "redis_ok": redis_password == "r3dis-pass", "wheel": assistant_wheel,'
        ' "known_hosts": lookup("file", ai_assistant_known_hosts)} | to_json }}\'\n'
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
        "AI_ASSISTANT_KNOWN_HOSTS": "10.40.32.7 ssh-ed25519 AAAAhostkey\n",
        "AI_ASSISTANT_PLAYBOOK": "site.yml",
        "PYTHON": sys.executable,
        **_wheel_env(tmp_path),
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
    assert result == {
        "mode": "0600",
        "dir": result["dir"],
        "redis_ok": True,
        "wheel": str(tmp_path / "ai_assistant-0.1.0-py3-none-any.whl"),
        "known_hosts": "10.40.32.7 ssh-ed25519 AAAAhostkey",
    }
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
    # A wrapper, not a symlink: a symlinked interpreter would not find its virtualenv (and pulumi, which the
    # script's `python -m infra.handoff` imports).
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)
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
    _repo_with_script(repo)
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
        **_wheel_env(tmp_path),
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


# --- the hand-off's files drive the real playbooks (issue 17) ----------------------------------------------------

CONNECTORS = {
    "im-connector": {
        "platform": "generic_im",
        "app_id": "cli_pulumi",
        "webhook_url": "https://assistant.example.com/api/im/callback",
        "reply_url": "https://im.example.com/bot/reply",
    }
}
IM_SECRETS = {
    "im-connector": {"app_secret": "whsec_cHVsdW1pLWNvbmZpZy1zZWNyZXQtb2YtMzItYnl0ZXMh"}  # pragma: allowlist secret
}
PRODUCTION = {
    "connectors": CONNECTORS,
    "alerts": {"connector": "im-connector", "chatId": "ops-chat"},
    "alertReceivers": [
        {"name": "ops", "email": "ops@example.com"},
        {"name": "pager", "webhook": "https://pager.example.com/hook"},
    ],
    "watchdogUrl": "https://deadman.example.com/ping/abc",
}


def _handoff(tmp_path: Path, tier: str = "standard", **overrides: Any) -> HandoffFiles:
    """A mocked `pulumi up` with production-like config, and the files the hand-off script would write from it."""
    from infra.handoff import write_handoff_files

    run = run_program(config_for("aws", tier, {**PRODUCTION, **overrides}), secrets={"imSecrets": IM_SECRETS})
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    wheel_env = _wheel_env(tmp_path)
    return write_handoff_files(
        env,
        tmp_path / "handoff",
        wheel=Path(wheel_env["AI_ASSISTANT_WHEEL"]),
        wheelhouse=Path(wheel_env["AI_ASSISTANT_WHEELHOUSE"]),
    )


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "PATH": f"{ANSIBLE_PLAYBOOK.parent}:{os.environ.get('PATH', '')}",
    }


def test_handoff_files_carry_what_the_roles_require(tmp_path: Path) -> None:
    files = _handoff(tmp_path)
    inv = yaml.safe_load(files.inventory.read_text())["all"]
    assistant = inv["children"]["assistant"]["vars"]
    tier = CATALOGUE["standard"]
    assert assistant["assistant_connectors"] == CONNECTORS
    assert (assistant["assistant_alerts_connector"], assistant["assistant_alerts_chat_id"]) == (
        "im-connector",
        "ops-chat",
    )
    assert assistant["assistant_memory_max_mib"] == tier.assistant.memory_limits_mib["assistant"]
    assert assistant["reverse_proxy_memory_max_mib"] == tier.assistant.memory_limits_mib["nginx"]
    assert assistant["assistant_worker_concurrency"] == tier.service_workers
    assert (assistant["assistant_lane_long_workers"], assistant["assistant_lane_media_workers"]) == (
        tier.long_workers,
        tier.media_workers,
    )
    assert inv["vars"]["reverse_proxy_real_ip_from"] and inv["vars"]["assistant_wheel"].endswith(".whl")
    monitoring = inv["children"]["monitoring"]["vars"]
    assert monitoring["alertmanager_email_to"] == ["ops@example.com"]
    assert monitoring["alertmanager_fallback_webhook_urls"] == ["https://pager.example.com/hook"]
    assert monitoring["alertmanager_watchdog_url"] == "https://deadman.example.com/ping/abc"
    assert monitoring["alertmanager_smtp_smarthost"] == "smtp.example.com:587"
    # Secrets only in the 0600 file; the app secret came from Pulumi config, not from any inventory.
    assert oct(files.secret_vars.stat().st_mode & 0o777) == "0o600"
    assert json.loads(files.secret_vars.read_text())["im_secrets"] == IM_SECRETS
    assert IM_SECRETS["im-connector"]["app_secret"] not in files.inventory.read_text()
    # The ssh options point at the hand-off's own known_hosts file and keep the bastion hop.
    assert inv["vars"]["ai_assistant_known_hosts"] == str(files.known_hosts)
    assert "UserKnownHostsFile={{ ai_assistant_known_hosts }}" in inv["vars"]["ansible_ssh_common_args"]
    assert "ProxyCommand='ssh -o StrictHostKeyChecking=" in inv["vars"]["ansible_ssh_common_args"]


def _site_preflight(tmp_path: Path, files: HandoffFiles, *extra: str) -> subprocess.CompletedProcess[str]:
    """playbooks/site.yml with the hand-off's files, every host on a local connection, check mode, preflight only."""
    local = [
        *("-e", "ansible_connection=local", "-e", "ansible_become=false"),
        *("-e", f"ansible_python_interpreter={sys.executable}"),
        *("--check", "--tags", "assistant_preflight"),
        *extra,
    ]
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), *files.playbook_args("playbooks/site.yml"), *local],
        cwd=ROOT,
        env=_ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is not installed in this virtualenv")
def test_handoff_files_pass_every_roles_argument_specs_and_preflight_in_site_yml(tmp_path: Path) -> None:
    """The real playbooks/site.yml with the files a mocked `pulumi up` hands over: syntax check, then every role's
    argument validation (Ansible runs it from meta/argument_specs.yml, tagged always) and the assistant's preflight
    asserts, on every inventory host. Only the connection is replaced (local, no become, check mode): nothing but
    the hosts' addresses differs from a real hand-off."""
    files = _handoff(tmp_path)
    syntax = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), *files.playbook_args("playbooks/site.yml"), "--syntax-check"],
        cwd=ROOT,
        env=_ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert syntax.returncode == 0, syntax.stdout[-3000:] + syntax.stderr[-3000:]
    secrets = json.loads(files.secret_vars.read_text())  # read first: nothing must change it
    proc = _site_preflight(tmp_path, files, "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # Each role of the playbook really validated its arguments, and the assistant's preflight really ran.
    validated = set(ROLE_VALIDATION.findall(out))
    assert {"assistant", "reverse_proxy", "tls", "alertmanager", "redis", "firewall"} <= validated, validated
    assert "Stop when alerts have a token but nowhere to go" in out
    # At -vvv, with every role's arguments validated from the hand-off's secrets, none of them is printed.
    values = [IM_SECRETS["im-connector"]["app_secret"]]
    values += [v for k, v in secrets.items() if isinstance(v, str) and len(v) >= 12 and k != "tls_internal_ca_dir"]
    assert len(values) >= 5
    leaked = [v[:6] + "..." for v in values if v in out]
    assert not leaked, f"secret values in ansible-playbook -vvv output: {leaked}"


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is not installed in this virtualenv")
def test_the_site_preflight_check_can_fail(tmp_path: Path) -> None:
    """The check above against a hand-off that misses a connector's app secret: the preflight must stop it."""
    files = _handoff(tmp_path, connectors={**CONNECTORS, "second": {"platform": "generic_im", "app_id": "x"}})
    proc = _site_preflight(tmp_path, files)
    assert proc.returncode != 0
    assert "assistant_connector_secrets.second.app_secret: required" in proc.stdout + proc.stderr


def test_write_handoff_files_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    from infra.handoff import HandoffError, write_handoff_files

    run = run_program(config_for("aws", "basic"))
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    w = _wheel_env(tmp_path)
    wheel, house = Path(w["AI_ASSISTANT_WHEEL"]), Path(w["AI_ASSISTANT_WHEELHOUSE"])
    cases = [
        ({**env}, tmp_path / "x.whl", house, None, "assistant_wheel: "),
        ({**env}, wheel, tmp_path / "nope", None, "assistant_wheelhouse: "),
        ({k: v for k, v in env.items() if k != "AI_ASSISTANT_SECRET_VARS"}, wheel, house, None, "_SECRET_VARS"),
        ({**env, "AI_ASSISTANT_INVENTORY": "[1"}, wheel, house, None, "hand-off environment: not valid"),
        ({**env}, wheel, house, {"no-such-host": {"ansible_port": 2222}}, "hostvars: no-such-host is not a host"),
    ]  # fmt: skip
    for i, (e, wh, hs, hv, message) in enumerate(cases):
        with pytest.raises(HandoffError) as exc:
            write_handoff_files(e, tmp_path / f"out{i}", wheel=wh, wheelhouse=hs, hostvars=hv)
        assert message in str(exc.value) and "\n" not in str(exc.value), (i, str(exc.value))
        assert not (tmp_path / f"out{i}" / "secrets.json").exists(), "nothing secret written on bad input"


def test_write_handoff_files_takes_a_harness_host_and_its_key(tmp_path: Path) -> None:
    """What the VM harness does: the mocked program's hosts are moved to where the VM listens, with its real key."""
    from infra.handoff import write_handoff_files

    run = run_program(config_for("aws", "basic"))
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    host = sorted(yaml.safe_load(env["AI_ASSISTANT_INVENTORY"])["all"]["children"]["assistant"]["hosts"])[0]
    w = _wheel_env(tmp_path)
    files = write_handoff_files(
        env,
        tmp_path / "out",
        wheel=Path(w["AI_ASSISTANT_WHEEL"]),
        wheelhouse=Path(w["AI_ASSISTANT_WHEELHOUSE"]),
        hostvars={host: {"ansible_host": "127.0.0.1", "ansible_port": 2222}},
        known_hosts="[127.0.0.1]:2222 ssh-ed25519 AAAAvmkey\n",
    )
    hostvars = yaml.safe_load(files.inventory.read_text())["all"]["children"]["assistant"]["hosts"][host]
    assert hostvars["ansible_host"] == "127.0.0.1" and hostvars["ansible_port"] == 2222
    assert hostvars["ai_assistant_zone"]  # what the program declared is kept
    assert files.known_hosts.read_text() == "[127.0.0.1]:2222 ssh-ed25519 AAAAvmkey\n"


HANDOFF_BAD_CONFIG: list[tuple[str, dict[str, Any], str]] = [
    ("connector without platform", {"connectors": {"bot": {"app_id": "x"}}}, "ai-assistant:connectors.bot.platform:"),
    ("connector name", {"connectors": {"Bad Name": {"platform": "slack"}}}, "ai-assistant:connectors.Bad Name: names"),
    (
        "secret in plain config",
        {"connectors": {"bot": {"platform": "generic_im", "app_secret": "s"}}},
        "ai-assistant:connectors.bot.app_secret: a secret; set it in imSecrets",
    ),
    ("connectors not a map", {"connectors": ["bot"]}, "ai-assistant:connectors: expected name -> options"),
    ("alerts to nowhere", {"alerts": {"connector": "ghost", "chatId": "c"}}, "ai-assistant:alerts.connector: 'ghost'"),
    ("alerts without chat", {"alerts": {"connector": "bot"}}, "ai-assistant:alerts: expected {connector"),
    ("e-mail without SMTP", {"alertSmtp": None}, "ai-assistant:alertSmtp: required when alertReceivers has an e-mail"),
    ("bad smarthost", {"alertSmtp": {"smarthost": "smtp", "from": "a@b.co"}}, "ai-assistant:alertSmtp.smarthost:"),
    ("bad sender", {"alertSmtp": {"smarthost": "s.example.com:25", "from": "x"}}, "ai-assistant:alertSmtp.from: 'x'"),
    (
        "SMTP login without password",
        {"alertSmtp": {"smarthost": "s.example.com:25", "from": "a@b.co", "username": "u"}},
        "ai-assistant:alertSmtpPassword: required with alertSmtp.username",
    ),
    (
        "plain-HTTP fallback webhook",
        {"alertReceivers": [{"name": "p", "webhook": "http://pager.example.com"}]},
        "ai-assistant:alertReceivers[0].webhook: 'http://pager.example.com' is not an https:// URL",
    ),
    ("receiver with neither", {"alertReceivers": [{"name": "p"}]}, "ai-assistant:alertReceivers[0]: needs a name and"),
    ("plain-HTTP watchdog", {"watchdogUrl": "http://deadman"}, "ai-assistant:watchdogUrl: 'http://deadman' is not"),
]


@pytest.mark.parametrize(("case", "overrides", "message"), HANDOFF_BAD_CONFIG, ids=[b[0] for b in HANDOFF_BAD_CONFIG])
def test_bad_handoff_config_fails_with_one_line_before_any_resource(
    case: str, overrides: dict[str, Any], message: str
) -> None:
    from infra.config import ConfigError
    from tests.infra.harness import Run

    base = {"connectors": {"bot": {"platform": "generic_im"}}} if "alerts" in overrides else {}
    run = Run()
    with pytest.raises(ConfigError) as exc:
        run_program(config_for("aws", "basic", {**base, **overrides}), run=run)
    assert message in str(exc.value), f"{case}: {exc.value}"
    assert "\n" not in str(exc.value)
    assert run.resources == [], f"{case}: resources declared before the error"


def test_without_an_alerts_chat_the_assistant_gets_no_alert_route(tmp_path: Path) -> None:
    """No `alerts` in Pulumi config: the hand-off passes no chat, and playbooks/group_vars leave the alert token off
    (so the preflight accepts it) while Alertmanager keeps the fallback receivers."""
    files = _handoff(tmp_path, alerts=None)
    inv = yaml.safe_load(files.inventory.read_text())["all"]
    assert inv["children"]["assistant"]["vars"]["assistant_alerts_connector"] == ""
    proc = _site_preflight(tmp_path, files)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_known_host_keys_turn_strict_checking_on_for_both_hops() -> None:
    """When the cloud modules hand over the keys cloud-init installs (Host.host_key, Deployment.bastion_host_key),
    the inventory checks strictly and known_hosts pins every address, bastion included."""
    from infra.inventory import known_hosts, render, ssh_args

    strict = ssh_args("ansible", "203.0.113.5", keys_known=True)
    assert strict.count("StrictHostKeyChecking=yes") == 2 and "accept-new" not in strict
    assert strict.count("UserKnownHostsFile={{ ai_assistant_known_hosts }}") == 2
    assert strict.endswith("-W %h:%p -q ansible@203.0.113.5'")
    assert "accept-new" in ssh_args("ansible", "203.0.113.5", keys_known=False)
    lines = known_hosts(
        [("10.40.32.7", "ssh-ed25519 AAAAhost\n"), ("10.40.32.8", None), ("203.0.113.5", "ssh-ed25519 B")]
    )
    assert lines == "10.40.32.7 ssh-ed25519 AAAAhost\n203.0.113.5 ssh-ed25519 B\n"
    inv = yaml.safe_load(render([], [], {"ansible_user": "ansible"}, "203.0.113.5", None, keys_known=True))["all"]
    assert inv["vars"]["ansible_ssh_common_args"] == strict
    assert inv["vars"]["ai_assistant_known_hosts"] == "{{ inventory_dir }}/known_hosts"


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is not installed in this virtualenv")
def test_ansible_resolves_the_known_hosts_path_next_to_the_exported_inventory(tmp_path: Path) -> None:
    """The plain `inventory` output used by hand (`pulumi stack output inventory > inv/inventory.yml`, knownHosts next
    to it): Ansible's own templating turns the ssh options into the file beside the inventory."""
    run = run_program(config_for("aws", "basic"))
    (tmp_path / "inventory.yml").write_text(run.exports["inventory"][0])
    (tmp_path / "play.yml").write_text(
        "- hosts: assistant\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug: {msg: 'ARGS={{ ansible_ssh_common_args }}'}\n"
    )
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")],
        cwd=tmp_path,
        env=_ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"UserKnownHostsFile={tmp_path}/known_hosts" in proc.stdout, proc.stdout[-3000:]


def test_build_wheel_builds_the_service_from_this_checkout(tmp_path: Path) -> None:
    """The hand-off's wheel step for real (pip wheel, no index needed). The wheelhouse step downloads the
    dependencies from the package index, which these tests do not reach; the VM harness passes its own."""
    import tomllib

    from infra.handoff import WHEEL_NAME, build_wheel

    wheel = build_wheel(ROOT, tmp_path / "dist")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert WHEEL_NAME.match(wheel.name) and wheel.name.startswith(f"ai_assistant-{version}-"), wheel.name


def test_the_stack_exports_known_hosts_in_plain_text() -> None:
    """Public host keys, for `pulumi stack output knownHosts > known_hosts` beside the exported inventory."""
    run = run_program(config_for("aws", "basic"))
    text, secret = run.exports["knownHosts"]
    assert secret is False and isinstance(text, str)
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert env["AI_ASSISTANT_KNOWN_HOSTS"] == text


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is not installed in this virtualenv")
def test_single_host_layout_for_the_vm_keeps_every_groups_variables(tmp_path: Path) -> None:
    """The VM harness converges one VM with what a multi-host `pulumi up` declares: every group's variables land on
    the one host, as Ansible itself merges them (ansible-inventory), with the harness's address and jump host."""
    from infra.handoff import write_handoff_files
    from infra.inventory import ssh_args

    run = run_program(config_for("aws", "standard", PRODUCTION), secrets={"imSecrets": IM_SECRETS})
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    w = _wheel_env(tmp_path)
    args = ssh_args("root", "127.0.0.1 -p 2222", keys_known=True)
    files = write_handoff_files(
        env,
        tmp_path / "out",
        wheel=Path(w["AI_ASSISTANT_WHEEL"]),
        wheelhouse=Path(w["AI_ASSISTANT_WHEELHOUSE"]),
        single_host="testvm",
        hostvars={"testvm": {"ansible_host": "127.0.0.1", "ansible_port": 22}},
        ssh_common_args=args,
    )
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.parent / "ansible-inventory"), "-i", str(files.inventory), "--list"],
        env=_ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    hv = parsed["_meta"]["hostvars"]
    assert list(hv) == ["testvm"]
    for group in ("assistant", "data", "monitoring", "color_blue"):
        assert parsed[group]["hosts"] == ["testvm"], group
    got = hv["testvm"]
    assert got["ansible_host"] == "127.0.0.1" and got["ai_assistant_zone"]
    assert got["assistant_connectors"] == CONNECTORS and got["redis_maxmemory"].endswith("mb")
    assert got["alertmanager_watchdog_url"] == PRODUCTION["watchdogUrl"]
    assert got["ansible_ssh_common_args"] == args and "StrictHostKeyChecking=yes" in args

    from infra.handoff import HandoffError

    with pytest.raises(HandoffError, match=r"^single_host: the inventory has no assistant host"):
        write_handoff_files(
            {**env, "AI_ASSISTANT_INVENTORY": "all: {children: {assistant: {hosts: {}}}}\n"},
            tmp_path / "none",
            wheel=Path(w["AI_ASSISTANT_WHEEL"]),
            wheelhouse=Path(w["AI_ASSISTANT_WHEELHOUSE"]),
            single_host="testvm",
        )


def _loopback_sshd(tmp: Path, authorized_key: str) -> tuple[subprocess.Popen[bytes], int, str]:
    """A plain sshd on 127.0.0.1 as the target host (the VM suite's target is the VM; here a loopback one)."""
    from tests.roles.vm.jumphost import sshd_binary
    from tests.roles.vm.machine import free_port

    sshd = sshd_binary()
    assert sshd is not None
    tmp.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hk")], check=True)
    (tmp / "ak").write_text(authorized_key)
    port = free_port()
    (tmp / "cfg").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'hk'}\nPidFile {tmp / 'pid'}\n"
        f"AuthorizedKeysFile {tmp / 'ak'}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
    )
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(tmp / "cfg")], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, port, " ".join((tmp / "hk.pub").read_text().split()[:2])


def _needs_sshd() -> str | None:
    from tests.roles.vm.jumphost import sshd_binary

    if not ANSIBLE_PLAYBOOK.exists():
        return "ansible is not installed in this virtualenv"
    if sshd_binary() is None or os.geteuid() != 0:
        return "needs openssh-server's sshd (scripts/apt-packages.txt) and root, to log in to a loopback sshd"
    return None


@pytest.mark.skipif(_needs_sshd() is not None, reason=str(_needs_sshd()))
def test_the_handoffs_ssh_options_hop_through_a_jump_host_and_refuse_a_changed_key(tmp_path: Path) -> None:
    """The VM suite's path in small: the hand-off's files from a mocked `pulumi up`, its ssh options
    (infra.inventory.ssh_args, strict) for a jump host stand-in, and real Ansible over its ssh transport to an sshd on
    loopback. With the pinned keys it logs in through the jump host; with another key for the target it stops."""
    from infra.handoff import write_handoff_files
    from infra.inventory import ssh_args
    from tests.roles.vm.jumphost import JumpHost
    from tests.roles.vm.machine import free_port

    key = tmp_path / "operator"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    target, port, target_key = _loopback_sshd(tmp_path / "target", (tmp_path / "operator.pub").read_text())
    jump = JumpHost(tmp_path / "jump", free_port(), f"127.0.0.1:{port}")
    try:
        jump.start((tmp_path / "operator.pub").read_text())
        run = run_program(config_for("aws", "basic"))
        env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
        w = _wheel_env(tmp_path)
        files = write_handoff_files(
            env,
            tmp_path / "handoff",
            wheel=Path(w["AI_ASSISTANT_WHEEL"]),
            wheelhouse=Path(w["AI_ASSISTANT_WHEELHOUSE"]),
            single_host="target",
            hostvars={"target": {"ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "root"}},
            known_hosts=f"[127.0.0.1]:{port} {target_key}\n[127.0.0.1]:{jump.port} {jump.host_key}\n",
            ssh_common_args=ssh_args(jump.user, f"127.0.0.1 -p {jump.port} -i {key}", keys_known=True),
        )

        def ping(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
            cmd = [str(ANSIBLE_PLAYBOOK.parent / "ansible"), "all", "-i", str(files.inventory), "-m", "ping"]
            env = {**_ansible_env(tmp_path), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / name)}
            extra_args = ("-e", "ansible_become=false", "--private-key", str(key), *extra)
            return subprocess.run(
                [*cmd, *extra_args], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120
            )

        good = ping("good")
        assert good.returncode == 0 and "ping: pong" in good.stdout, good.stdout[-2000:] + good.stderr[-1000:]
        assert jump.accepted_logins() == 1, "the login did not go through the jump host"

        (tmp_path / "other_kh").write_text(files.known_hosts.read_text().replace(target_key, jump.host_key))
        bad = ping("bad", "-e", f"ai_assistant_known_hosts={tmp_path / 'other_kh'}")
        assert bad.returncode != 0 and "Host key verification failed" in bad.stdout + bad.stderr, bad.stdout[-2000:]
    finally:
        jump.stop()
        target.terminate()
        target.wait(timeout=20)
