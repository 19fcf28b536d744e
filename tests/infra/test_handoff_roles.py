"""From a mocked `pulumi up` to the files on an assistant host: the managed Redis and the shared knowledge base reach
the service's settings, secrets only through the secret hand-off.

The program runs under Pulumi's mocks (the cloud accounts are the only stand-in); the hand-off's inventory and secret
variables then go through real Ansible (`ansible-playbook` resolves playbooks/group_vars for each assistant host) and
the assistant role's templates are rendered with Ansible's own templating and loaded by the service's settings code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.harness import Run, config_for, is_secret, run_program, unwrap
from tests.roles.test_static import VENV_BIN, render

ROOT = Path(__file__).resolve().parents[2]
Get = Callable[[str, str], Run]
# Everything the assistant role takes from the hand-off about Redis and the knowledge base.
ROLE_VARS = (
    "assistant_redis_host",
    "assistant_redis_port",
    "assistant_redis_user",
    "assistant_redis_password",
    "assistant_redis_tls",
    "assistant_redis_ca_cert",
    "assistant_knowledge_store",
    "assistant_knowledge_url",
    "assistant_knowledge_grpc_port",
    "assistant_knowledge_api_key",
    "assistant_knowledge_ca_cert",
)
# What ApsaraDB for Redis' console hands out (any PEM does here: the text is only carried, not parsed).
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBsTCCAVegAwIBAgIUTESTONLY\n-----END CERTIFICATE-----\n"


def handoff(run: Run) -> tuple[str, dict[str, Any]]:
    [cmd] = run.of("command:local:Command")
    assert is_secret(cmd.inputs["environment"]), "the hand-off environment is a Pulumi secret"
    env = unwrap(cmd.inputs["environment"])
    return env["AI_ASSISTANT_INVENTORY"], json.loads(env["AI_ASSISTANT_SECRET_VARS"])


def resolve(
    run: Run, work: Path, role_vars: tuple[str, ...] = ROLE_VARS, hosts: str = "assistant"
) -> dict[str, dict[str, Any]]:
    """`role_vars` for every host of `hosts`, as ansible-playbook resolves them from the files the real hand-off writes
    (infra.handoff.write_handoff_files: the inventory, the secret variables passed with -e @file as
    infra/ansible_handoff.sh does, the internal CA's directory) and playbooks/group_vars."""
    from infra.handoff import write_handoff_files

    [cmd] = run.of("command:local:Command")
    shutil.copytree(ROOT / "playbooks", work / "playbooks", ignore=shutil.ignore_patterns("inventory"))
    wheel = work / "dist" / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"stand-in: only its name is read")
    files = write_handoff_files(unwrap(cmd.inputs["environment"]), work / "handoff", wheel=wheel, wheelhouse=work)
    return _probe(work, role_vars, hosts, ["-i", str(files.inventory), "-e", f"@{files.secret_vars}"])


def _probe(work: Path, role_vars: tuple[str, ...], hosts: str, args: list[str]) -> dict[str, dict[str, Any]]:
    """`role_vars` for every host of `hosts` as ansible-playbook resolves them, with `args` (inventory, -e) from
    `work`, which holds a copy of playbooks/."""
    probe = [
        {
            "hosts": hosts,
            "gather_facts": False,
            "become": False,
            # debug runs on the controller: nothing connects to the (mocked) hosts.
            "tasks": [
                {"ansible.builtin.debug": {"msg": "{{ {" + ", ".join(f"'{v}': {v}" for v in role_vars) + "} }}"}}
            ],
        }
    ]
    (work / "playbooks" / "probe.yml").write_text(yaml.safe_dump(probe, sort_keys=False))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
    }
    cmd_line = [str(VENV_BIN / "ansible-playbook"), *args]
    proc = subprocess.run(
        [*cmd_line, "playbooks/probe.yml"], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    found = result["plays"][0]["tasks"][0]["hosts"]
    return {name: dict(r["msg"]) for name, r in found.items()}


def host_settings(variables: dict[str, Any], config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings from the role's assistant.yaml and secrets.env for these variables."""
    from ai_assistant.settings import load_settings

    extra = {**variables, "assistant_wheel": "/x/ai_assistant-0.1.0-py3-none-any.whl"}
    extra |= {"assistant_admin_token": "admintoken", "assistant_config_dir": str(config_dir)}
    # Generated on the host when not given (the deploy gate's probe connector); rendering needs a value.
    probe_secret = "whsec_cHJvYmUtc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMh"  # pragma: allowlist secret
    extra |= {"assistant_deploy_probe_secret": probe_secret}
    config_dir.mkdir()
    (config_dir / "assistant.yaml").write_text(render("assistant", "assistant.yaml.j2", extra))
    env = render("assistant", "secrets.env.j2", extra)
    for line in env.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    return load_settings(config_dir)


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_assistant_hosts_use_the_managed_redis_over_tls_and_the_one_knowledge_base(
    stack_run: Get, cloud: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = stack_run(cloud, "standard")
    inventory, secrets = handoff(run)
    plain = yaml.safe_load(inventory)["all"]["vars"]
    redis, kb = plain["ai_assistant_redis"], plain["ai_assistant_knowledge"]
    resolved = resolve(run, tmp_path)
    assert len(resolved) >= 2, "assistant hosts in both zones"
    for host, v in resolved.items():
        # The same endpoints for every host, whatever its zone: not its zone's data host.
        assert (v["assistant_redis_host"], int(v["assistant_redis_port"])) == (redis["host"], 6379), host
        assert v["assistant_redis_user"] == redis["user"] and v["assistant_redis_tls"] in (True, "True"), host
        assert v["assistant_redis_password"] == secrets["redis_password"], host
        assert (v["assistant_knowledge_store"], v["assistant_knowledge_url"]) == ("weaviate", kb["url"]), host
        assert v["assistant_knowledge_api_key"] == secrets["weaviate_api_key"], host
        # The data host's TLS link (ADR 0120): https://, verified against the internal CA the hand-off signs with.
        assert kb["url"].startswith("https://") and kb["url"].endswith(":8082"), kb
        assert v["assistant_knowledge_ca_cert"].strip() == secrets["internal_ca_cert_pem"].strip(), host

    host, v = sorted(resolved.items())[0]
    settings = host_settings(v, tmp_path / "config", monkeypatch)
    user = "" if redis["user"] == "default" else redis["user"]  # ElastiCache: the AUTH token alone
    assert settings.store.redis_url.get_secret_value() == (
        f"rediss://{user}:{secrets['redis_password']}@{redis['host']}:6379/0"
    )
    assert settings.store.redis_ca_file is None, "no CA given: the system trust store"
    assert settings.engine.ca_file is None, "no model server CA given: the system trust store"
    store = settings.knowledge.store
    assert (store.name, store.url, store.grpc_port) == ("weaviate", kb["url"], 50051)
    assert store.ca_file == tmp_path / "config" / "knowledge-ca.pem", "the role writes the CA next to assistant.yaml"
    assert store.api_key is not None and store.api_key.get_secret_value() == secrets["weaviate_api_key"]
    written = (tmp_path / "config" / "assistant.yaml").read_text()
    assert secrets["redis_password"] not in written and secrets["weaviate_api_key"] not in written
    assert "rediss" not in written, "the URL (with its password) lives in secrets.env only"


def test_a_redis_ca_from_the_stack_config_reaches_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_program(config_for("alicloud", "basic", redisCaCert=CA_PEM))
    assert yaml.safe_load(handoff(run)[0])["all"]["vars"]["ai_assistant_redis"]["ca_cert"] == CA_PEM
    _, v = sorted(resolve(run, tmp_path).items())[0]
    assert v["assistant_redis_ca_cert"] == CA_PEM
    settings = host_settings(v, tmp_path / "config", monkeypatch)
    assert settings.store.redis_ca_file == tmp_path / "config" / "redis-ca.pem"


def test_a_model_server_ca_reaches_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU layout: the model server on its own host behind a TLS terminator whose certificate the deployment's
    internal CA signs; assistant.yaml names the CA file the role writes next to it."""
    from ai_assistant.engines.base import engine_settings
    from tests.pki import make_ca

    ca = make_ca(tmp_path, "deployment internal CA")
    variables = {
        "assistant_redis_password": "r3dis",  # pragma: allowlist secret
        "assistant_engine_base_url": "https://10.0.2.15/v1",
        "assistant_engine_ca_cert": ca.pem.read_text(),
    }
    settings = host_settings(variables, tmp_path / "config", monkeypatch)
    assert settings.engine.base_url == "https://10.0.2.15/v1"
    assert settings.engine.ca_file == tmp_path / "config" / "engine-ca.pem"
    # The file as the role's copy task writes it: the service loads it as the CA (a ConfigError otherwise).
    (tmp_path / "config" / "engine-ca.pem").write_text(variables["assistant_engine_ca_cert"].strip() + "\n")
    assert engine_settings(settings).ca_file == tmp_path / "config" / "engine-ca.pem"


def test_without_infra_the_hosts_keep_the_data_hosts_redis_and_their_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The role's defaults (the single-host layout, the VM suite): plain redis:// on loopback, the embedded store.
    settings = host_settings({"assistant_redis_password": "r3dis"}, tmp_path / "config", monkeypatch)
    assert settings.store.redis_url.get_secret_value() == "redis://ai-assistant:r3dis@127.0.0.1:6379/0"
    assert settings.knowledge.store.name == "embedded" and settings.knowledge.store.api_key is None
    assert settings.engine.ca_file is None


def test_a_separate_data_hosts_own_redis_is_reached_over_its_tls_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-written inventory (no infra, so no managed Redis) with the data host apart: its Redis stays on loopback
    behind its link (issue 23 item 4), and the assistant host connects with rediss:// to the data host's address,
    verified against the internal CA; the single-host layout keeps plain redis:// on loopback (the test above)."""
    from tests.pki import make_ca

    shutil.copytree(ROOT / "playbooks", tmp_path / "playbooks", ignore=shutil.ignore_patterns("inventory"))
    ca_dir = tmp_path / "internal-ca"
    ca_dir.mkdir()
    ca = make_ca(ca_dir, "internal CA")
    ca.pem.rename(ca_dir / "ca.crt")
    inventory = {
        "all": {
            "children": {
                "assistant": {"hosts": {"a1": {"ansible_host": "10.0.1.11"}}},
                "data": {"hosts": {"d1": {"ansible_host": "10.0.1.21"}}},
            }
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    args = ["-i", "inventory.yml", "-e", f"tls_internal_ca_dir={ca_dir}", "-e", "redis_password=r3dis"]
    assistant_vars = (
        "assistant_redis_host",
        "assistant_redis_tls",
        "assistant_redis_ca_cert",
        "assistant_redis_password",
    )
    a1 = _probe(tmp_path, assistant_vars, "assistant", args)["a1"]
    assert (a1["assistant_redis_host"], a1["assistant_redis_tls"]) == ("10.0.1.21", True), a1
    assert a1["assistant_redis_ca_cert"].strip() == (ca_dir / "ca.crt").read_text().strip()
    [links] = [v["link_tls_links"] for v in _probe(tmp_path, ("link_tls_links",), "data", args).values()]
    redis = [link for link in links if link["name"] == "redis"]
    assert [int(link["port"]) for link in redis] == [6379] and "upstream_port" not in redis[0], links
    settings = host_settings(a1, tmp_path / "config", monkeypatch)
    assert settings.store.redis_url.get_secret_value() == "rediss://ai-assistant:r3dis@10.0.1.21:6379/0"
    assert settings.store.redis_ca_file == tmp_path / "config" / "redis-ca.pem"


@pytest.mark.parametrize(("handed_over", "runs"), [({"host": "r.example", "tls": True}, False), (None, True)])
def test_the_data_play_runs_no_redis_where_a_managed_one_is_handed_over(
    handed_over: dict[str, Any] | None, runs: bool
) -> None:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    [data_play] = [p for p in yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text()) if p.get("hosts") == "data"]
    [redis_role] = [r for r in data_play["roles"] if r["role"] == "redis"]
    variables = {} if handed_over is None else {"ai_assistant_redis": handed_over}
    templar = Templar(loader=DataLoader(), variables=variables)
    when = trust_as_template("{{ " + redis_role["when"] + " }}")
    assert templar.template(when) is runs


def test_the_gpu_hosts_model_server_is_reached_over_tls_checked_against_the_internal_ca(
    stack_run: Get, tmp_path: Path
) -> None:
    # The harness's stack config is the GPU layout: TGI on the inference hosts.
    run = stack_run("aws", "standard")
    inventory, secrets = handoff(run)
    children = yaml.safe_load(inventory)["all"]["children"]
    first_gpu = sorted(children["inference"]["hosts"].items())[0][1]["ansible_host"]
    engine = resolve(run, tmp_path / "a", ("assistant_engine_base_url", "assistant_engine_ca_cert"))
    assert engine, "assistant hosts"
    for host, v in engine.items():
        assert v["assistant_engine_base_url"] == f"https://{first_gpu}:8089/v1", host
        # The CA the hand-off wrote on the controller, the one the tls role signs the link's certificate with.
        assert v["assistant_engine_ca_cert"].strip() == secrets["internal_ca_cert_pem"].strip(), host
    gpu = resolve(run, tmp_path / "i", ("model_server_host", "link_tls_links", "firewall_extra_rules"), "inference")
    assistants = {f"{h['ansible_host']}/32" for h in children["assistant"]["hosts"].values() if h}
    [monitor] = children["monitoring"]["hosts"]
    data_hosts = children["data"]["hosts"]
    for host, v in gpu.items():
        # TGI itself only on loopback; the private address is the TLS link's, on the port the firewall opens: to the
        # assistant hosts (the answers) and to the monitoring host (Prometheus scrapes /metrics there).
        assert v["model_server_host"] == "127.0.0.1", host
        assert [(link["name"], int(link["port"])) for link in v["link_tls_links"]] == [("model", 8089)], host
        opened = {cidr for r in v["firewall_extra_rules"] if int(r["port"]) == 8089 for cidr in r["cidrs"]}
        assert opened == assistants | {f"{data_hosts[monitor]['ansible_host']}/32"}, host
        assert {int(r["port"]) for r in v["firewall_extra_rules"]} == {8089}, host


def test_the_log_host_fronts_journal_remote_with_mutual_tls_for_every_host(stack_run: Get, tmp_path: Path) -> None:
    # One log host (the monitoring host, a data host): its link carries the journal with client verification, and its
    # firewall admits that port from every host of the estate; the other data host has neither. Both front their
    # Weaviate (REST, and gRPC with h2 to Weaviate's own port: ADR 0120), reachable from the assistant hosts only.
    run = stack_run("aws", "standard")
    children = yaml.safe_load(handoff(run)[0])["all"]["children"]
    [monitor] = children["monitoring"]["hosts"]
    estate = {
        f"{h['ansible_host']}/32"
        for group in ("assistant", "data", "inference")
        for h in (children.get(group, {}).get("hosts") or {}).values()
        if h
    }
    data = resolve(run, tmp_path / "d", ("ai_assistant_log_host", "link_tls_links", "firewall_extra_rules"), "data")
    assistants = {f"{h['ansible_host']}/32" for h in children["assistant"]["hosts"].values()}
    assert len(data) == 2 and monitor in data, sorted(data)
    for host, v in data.items():
        assert v["ai_assistant_log_host"] == monitor, host
        opened = {cidr for r in v["firewall_extra_rules"] if int(r["port"]) == 19532 for cidr in r["cidrs"]}
        links = [(link["name"], int(link["port"]), link.get("verify_client")) for link in v["link_tls_links"]]
        weaviate = [("weaviate", 8082, None), ("weaviate-grpc", 50051, None)]
        grpc = next(link for link in v["link_tls_links"] if link["name"] == "weaviate-grpc")
        assert (int(grpc["upstream_port"]), grpc["alpn"]) == (50052, ["h2"]), grpc
        weaviate_open = {int(r["port"]) for r in v["firewall_extra_rules"] if set(r["cidrs"]) == assistants}
        assert {8082, 50051} <= weaviate_open and 50052 not in weaviate_open, host
        if host == monitor:
            assert links == [*weaviate, ("journal", 19532, True)], host
            assert opened == estate, host
        else:
            assert links == weaviate and opened == set(), host


# Where the scaling groups start assistant hosts, per cloud: the group's type, its subnet input, the subnet's type.
SCALING = {
    "aws": ("aws:autoscaling/group:Group", "vpcZoneIdentifiers", "aws:ec2/subnet:Subnet"),
    "alicloud": ("alicloud:ess/scalingGroup:ScalingGroup", "vswitchIds", "alicloud:vpc/switch:Switch"),
}


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_assistant_hosts_a_scaling_group_starts_later_reach_the_data_gpu_and_log_hosts(
    scaled_run: Get, stack_run: Get, cloud: str, tmp_path: Path
) -> None:
    # An autoscaled stack's static inventory lists no assistant host, and a host a group starts after the hand-off's
    # run is in no inventory at all: the data hosts' links (Weaviate, REST and gRPC) and the GPU hosts' model link
    # must admit the subnets the groups start hosts in, or that host's knowledge and answers fail. (The security
    # groups, which admit members of the assistant group only, keep it to assistant hosts: tests/infra/test_network*.)
    run = scaled_run(cloud, "standard")
    children = yaml.safe_load(handoff(run)[0])["all"]["children"]
    assert not children["assistant"].get("hosts"), "autoscaled: the groups' hosts come from the dynamic inventory"
    group_type, subnet_input, subnet_type = SCALING[cloud]
    subnet_ids = {i for g in run.of(group_type) for i in g.inputs[subnet_input]}
    started_in = {s.inputs["cidrBlock"] for s in run.of(subnet_type) if s.id in subnet_ids}
    assert len(started_in) == 2, "one private subnet per zone"
    data = resolve(run, tmp_path / "d", ("firewall_extra_rules",), "data")
    gpu = resolve(run, tmp_path / "i", ("firewall_extra_rules",), "inference")
    assert data and gpu
    for host, v in [*data.items(), *gpu.items()]:
        rules = [r for r in v["firewall_extra_rules"] if "from the assistant hosts" in r["comment"]]
        assert {int(r["port"]) for r in rules} == ({8089} if host in gpu else {6379, 8082, 50051}), host
        for r in rules:
            assert set(r["cidrs"]) == started_in, (host, r)
    # The log host takes their journals too (infra/boot_configure.py ships it with the host's own certificate).
    [monitor] = children["monitoring"]["hosts"]
    journal = [r for r in data[monitor]["firewall_extra_rules"] if int(r["port"]) == 19532]
    assert journal and started_in <= set(journal[0]["cidrs"]), journal
    # Fixed hosts: their own addresses only, as before.
    fixed = resolve(stack_run(cloud, "standard"), tmp_path / "f", ("ai_assistant_autoscaled_cidrs",), "data")
    assert fixed and all(v["ai_assistant_autoscaled_cidrs"] == [] for v in fixed.values()), fixed


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_no_playbook_group_vars_file_overrides_what_the_stack_sets(stack_run: Get, cloud: str) -> None:
    # Ansible ranks playbooks/group_vars above the inventory's own group variables (its `all` vars included): a default
    # there for a variable the stack sets makes the stack's value dead. ai_assistant_inference_mode: local in
    # group_vars/all.yml did that to every GPU deployment (their assistants ran llama.cpp and never called TGI).
    children = yaml.safe_load(handoff(stack_run(cloud, "standard"))[0])["all"]
    stack_sets = set(children.get("vars") or {})
    for group in (children.get("children") or {}).values():
        stack_sets |= set((group or {}).get("vars") or {})
    for path in sorted((ROOT / "playbooks" / "group_vars").glob("*.yml")):
        shadowed = stack_sets & set(yaml.safe_load(path.read_text()) or {})
        assert not shadowed, f"{path.relative_to(ROOT)} overrides the stack's {sorted(shadowed)}"
