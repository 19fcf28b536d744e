"""The four monitoring roles without a VM: ansible-lint (production profile), argument specs that match the defaults
(keys and values), and the templates rendered by real Ansible and checked by promtool and amtool, routing the same
way as the example config. Converging them in a Debian VM belongs to the roles' VM harness (tests/roles/)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ALERTMANAGER_YML, MONITORING, RULE_TESTS, RULES
from .test_alertmanager import routes
from .test_rules import alerts

ROOT = MONITORING.parent
ROLES = ("node_exporter", "prometheus", "alertmanager", "grafana")
BIN = Path(sys.executable).parent


def test_ansible_lint_production_profile() -> None:
    paths = [f"roles/{r}" for r in ROLES] + ["playbooks/monitoring.yml"]
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "-c", "tests/roles/ansible-lint.yml", "--nocolor", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_playbook_syntax() -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "playbooks/monitoring.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role: str) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    with_default = {name for name, option in options.items() if "default" in option}
    assert with_default == set(defaults), (
        f"only in spec: {with_default - set(defaults)}, only in defaults: {set(defaults) - with_default}"
    )
    for name, option in options.items():
        assert name.startswith(role + "_"), name
        assert option.get("description"), f"{name}: no description"
        if re.search(r"(password|_token)$", name):
            assert "default" not in option and option.get("no_log") is True, (
                f"{name}: a secret needs no_log, no default"
            )
        else:
            assert option.get("default") == defaults[name], f"{name}: {option.get('default')!r} != {defaults[name]!r}"


@pytest.mark.parametrize("role", ROLES)
def test_readme_variables_are_generated_from_the_spec(role: str) -> None:
    from tests.roles import readme_vars

    readme = (ROOT / "roles" / role / "README.md").read_text()
    for heading in ("## What it changes on the host", "## Security controls", "## Variables"):
        assert heading in readme, f"roles/{role}/README.md lacks {heading!r}"
    assert readme_vars.render(role, readme) == readme, "run `.venv/bin/python -m tests.roles.readme_vars --write`"


def render(tmp_path: Path, **extra: Any) -> Path:
    out = tmp_path / "rendered"
    out.mkdir(parents=True)
    variables = {"out": str(out), "role_root": str(ROOT / "roles"), **extra}
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            json.dumps(variables),
            "tests/monitoring/render_roles.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out


ROLE_VARS = {
    "alertmanager_assistant_token": "x" * 32,
    "alertmanager_email_to": ["ai-assistant-oncall@corp.example"],
    "alertmanager_smtp_smarthost": "smtp.corp.example:587",
    "alertmanager_smtp_from": "alertmanager@corp.example",
    "alertmanager_smtp_auth_username": "alertmanager@corp.example",
    "alertmanager_fallback_webhook_urls": ["https://events.pager.corp.example/hook/ai-assistant"],
    "alertmanager_watchdog_url": "https://deadman.corp.example/ping/ai-assistant",
    "alertmanager_assistant_url": "https://10.40.32.10/api/alerts",
    "alertmanager_assistant_ca_cert": "-----BEGIN CERTIFICATE-----\nnot-parsed-here\n-----END CERTIFICATE-----\n",
    "alertmanager_assistant_server_name": "assistant.corp.example",
    "prometheus_assistant_targets": ["10.0.1.10:9464"],
    "prometheus_node_targets": ["10.0.1.10:9100"],
    "prometheus_model_server_targets": ["10.0.1.20:8089"],
    "prometheus_model_server_ca_cert": "-----BEGIN CERTIFICATE-----\nnot-parsed-here\n-----END CERTIFICATE-----\n",
    "prometheus_tls_probe_targets": ["bot.corp.example:443"],
    "prometheus_slo_objectives": {"availability": 0.995, "ack_latency": 0.99, "answer_latency": 0.99},
}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered with every option in use (e-mail, probes, targets, an objective of 99.5 %)."""
    return render(tmp_path_factory.mktemp("full"), **ROLE_VARS)


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered with only the required token: the defaults."""
    return render(tmp_path_factory.mktemp("minimal"), alertmanager_assistant_token="z" * 32)


def test_rendered_alertmanager_config_is_valid_and_routes_like_the_example(amtool: str, full: Path) -> None:
    out = full
    config = out / "alertmanager.yml"
    proc = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rendered, example = yaml.safe_load(config.read_text()), yaml.safe_load(ALERTMANAGER_YML.read_text())
    assert rendered["route"] == example["route"]
    assert rendered["inhibit_rules"] == example["inhibit_rules"]
    assert rendered["receivers"] == example["receivers"]
    assert "x" * 32 not in config.read_text()  # the token is in a file referenced by path
    for rule in alerts():
        labels = {"alertname": rule["alert"], **{k: str(v) for k, v in rule["labels"].items()}}
        assert routes(amtool, config, labels) == routes(amtool, ALERTMANAGER_YML, labels), rule["alert"]


def test_rendered_alertmanager_config_without_email_sends_everything_to_the_im(amtool: str, minimal: Path) -> None:
    out = minimal
    config = out / "alertmanager.yml"
    proc = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The watchdog receiver has no integration without a URL: the heartbeat stays out of the team chat.
    receivers = yaml.safe_load(config.read_text())["receivers"]
    assert receivers == [receivers[0], {"name": "watchdog"}] and receivers[0]["name"] == "team-im"
    assert routes(amtool, config, {"alertname": "AIAssistantDown", "severity": "critical"}) == ["team-im"]


def test_rendered_prometheus_config_and_objectives(promtool: str, full: Path, tmp_path: Path) -> None:
    out = full
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "alertmanager", "ai-assistant", "node", "model-server", "blackbox", "tls"}
    assert jobs["ai-assistant"]["static_configs"] == [{"targets": ["10.0.1.10:9464"]}]
    # TGI behind the GPU host's link_tls: scraped over https, verified against the CA the role writes beside the config.
    model = jobs["model-server"]
    assert (model["scheme"], model["tls_config"]) == ("https", {"ca_file": "/etc/prometheus/model-server-ca.pem"})
    assert "scheme" not in jobs["node"] and "tls_config" not in jobs["node"]
    model["tls_config"]["ca_file"] = str(tmp_path / "model-server-ca.pem")  # promtool opens it: a real certificate
    (tmp_path / "model-server-ca.pem").write_text(_self_signed_pem())
    # promtool checks the config against the generated rules, with the role's objectives file in place of the default
    rules = tmp_path / "rules"
    rules.mkdir()
    for src in RULES.glob("*.rules.yml"):
        (rules / src.name).write_text(src.read_text())
    (rules / "slo-objectives.rules.yml").write_text((out / "slo-objectives.rules.yml").read_text())
    config["rule_files"] = [str(rules / "*.rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    objectives = yaml.safe_load((out / "slo-objectives.rules.yml").read_text())["groups"][0]["rules"]
    exprs = {(r["record"], r["labels"]["slo"]): r["expr"] for r in objectives}
    assert exprs[("slo:objective:ratio", "availability")] == "vector(0.995)"
    assert exprs[("slo:error_budget:ratio", "availability")] == "vector(0.005)"


def _self_signed_pem() -> str:
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         "/dev/null", "-subj", "/CN=test CA", "-days", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def test_role_objectives_with_the_seed_defaults_equal_the_generated_file(
    promtool: str, minimal: Path, tmp_path: Path
) -> None:
    """The role's objectives template and monitoring/rulegen.py write the same rules, so the SLO unit tests hold for
    what the role installs: they are run here against the role's file."""
    out = minimal
    role = yaml.safe_load((out / "slo-objectives.rules.yml").read_text())
    generated = yaml.safe_load((RULES / "slo-objectives.rules.yml").read_text())
    assert role == generated
    work = tmp_path / "slo"
    (work / "tests").mkdir(parents=True)
    (work / "rules").mkdir()
    (work / "rules" / "slo.rules.yml").write_text((RULES / "slo.rules.yml").read_text())
    (work / "rules" / "slo-objectives.rules.yml").write_text((out / "slo-objectives.rules.yml").read_text())
    (work / "tests" / "slo.test.yml").write_text((RULE_TESTS / "slo.test.yml").read_text())
    proc = subprocess.run(
        [promtool, "test", "rules", "slo.test.yml"], cwd=work / "tests", capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_node_exporter_flags(minimal: Path) -> None:
    out = minimal
    line = next(x for x in (out / "prometheus-node-exporter").read_text().splitlines() if x.startswith("ARGS="))
    [value] = shlex.split(line.removeprefix("ARGS="))
    args = shlex.split(value)
    assert "--web.listen-address=:9100" in args
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in args
    assert "--no-collector.zfs" in args
    proc = subprocess.run(["prometheus-node-exporter", *args, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # every flag is one node_exporter 1.5 knows


def test_playbook_derives_scrape_targets_and_alert_url_from_the_inventory(tmp_path: Path) -> None:
    """The expressions of playbooks/monitoring.yml, evaluated by Ansible against a multi-host inventory (debug tasks on
    the controller only)."""
    play = yaml.safe_load((ROOT / "playbooks" / "monitoring.yml").read_text())[1]
    variables = dict(play.get("vars", {}))
    for role in play["roles"]:
        variables.update(role.get("vars", {}))
    names = [k for k in variables if not k.startswith("__")]
    show = "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + "} | to_json }}"
    task = {"name": "Show", "ansible.builtin.debug": {"msg": show}}
    probe = [{"hosts": "monitoring", "connection": "local", "gather_facts": False, "vars": variables, "tasks": [task]}]
    (tmp_path / "probe.yml").write_text(yaml.safe_dump(probe))
    hosts = {
        "assistant": {
            "app-a": {
                "ansible_host": "10.0.1.10",
                "tls_domains": ["bot.corp.example"],
                "assistant_alerts_connector": "im-connector",
            },
            "app-b": {},
        },
        "inference": {"gpu-a": {"ansible_host": "10.0.1.20", "model_server_port": 8080}},
        "data": {"kb-a": {"ansible_host": "10.0.1.30"}},
        "monitoring": {"mon-a": {"ansible_host": "10.0.1.40"}},
    }
    # playbooks/group_vars/all.yml reads it from the controller's internal CA; this probe is not under playbooks/.
    ca = "-----BEGIN CERTIFICATE-----\nthe-internal-ca\n-----END CERTIFICATE-----\n"
    inventory = {
        "all": {
            "vars": {"ai_assistant_internal_ca_cert": ca},
            "children": {group: {"hosts": members} for group, members in hosts.items()},
        }
    }
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.json"), str(tmp_path / "probe.yml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"ANSIBLE_STDOUT_CALLBACK": "json", "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["mon-a"]["msg"]
    got = json.loads(result) if isinstance(result, str) else result
    # Both slots of each assistant host (blue/green): the idle one is down by design (AIAssistantDown knows).
    assert got["prometheus_assistant_targets"] == ["10.0.1.10:9464", "10.0.1.10:9465", "app-b:9464", "app-b:9465"]
    assert got["prometheus_node_targets"] == [
        "10.0.1.10:9100",
        "app-b:9100",
        "10.0.1.20:9100",
        "10.0.1.30:9100",
        "10.0.1.40:9100",
    ]
    assert got["prometheus_model_server_targets"] == ["10.0.1.20:8080"]
    assert got["prometheus_model_server_ca_cert"] == ca  # TGI behind the GPU host's link_tls
    # The private path: nginx on the first assistant host's private address, its certificate checked by name.
    assert got["alertmanager_assistant_url"] == "https://10.0.1.10/api/alerts"
    assert got["alertmanager_assistant_server_name"] == "bot.corp.example"
