"""Checks of roles/ and playbooks/ that need no VM: lint, syntax, the argument_specs contract, template output, and
the one-line errors the roles give for bad input (run against localhost in check mode; each stops at its first
task, before anything on this machine could change)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airgap.wheels import UV_VERSION

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
VENV_BIN = Path(sys.executable).parent
# The monitoring roles belong to another part of the repository and have their own tests.
ROLES = sorted(
    p.name
    for p in ROLES_DIR.iterdir()
    if p.is_dir() and p.name not in {"prometheus", "alertmanager", "node_exporter", "grafana"}
)
TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "path": str,
    "int": int,
    "bool": bool,
    "list": list,
    "dict": dict,
    "float": (int, float),
}


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_ansible_lint_production_profile_is_clean() -> None:
    targets = [f"roles/{r}" for r in ROLES] + [
        "playbooks",
        "tests/roles/vm/prepare.yml",
        "tests/roles/vm/containers-check.yml",
        "tests/roles/vm/ssh-transport.yml",
    ]
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "-c", "tests/roles/ansible-lint.yml", "--offline", "--nocolor", *targets],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ansible_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "playbook", ["playbooks/site.yml", "tests/roles/vm/prepare.yml", "tests/roles/vm/ssh-transport.yml"]
)
def test_playbook_syntax(playbook: str) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", playbook],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ansible_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("role", ROLES)
def test_role_has_the_auditors_files(role: str) -> None:
    base = ROLES_DIR / role
    for rel in ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml", "handlers/main.yml"):
        assert (base / rel).is_file(), f"roles/{role}/{rel} is missing"
    readme = (base / "README.md").read_text(encoding="utf-8")
    for heading in ("## What it changes on the host", "## Security controls", "## Variables"):
        assert heading in readme, f"roles/{role}/README.md lacks '{heading}'"


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults_in_keys_and_values(role: str) -> None:
    defaults = load(ROLES_DIR / role / "defaults/main.yml") or {}
    options = load(ROLES_DIR / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    for name in defaults:
        assert name.startswith(f"{role}_"), f"roles/{role}/defaults: {name} lacks the '{role}_' prefix"
        assert name in options, f"roles/{role}: {name} is in defaults but not in meta/argument_specs.yml"
    for name, spec in options.items():
        assert name.startswith(f"{role}_"), f"roles/{role}/argument_specs: {name} lacks the '{role}_' prefix"
        assert spec.get("description"), f"roles/{role}: {name} has no description"
        assert spec.get("type") in TYPES, f"roles/{role}: {name} has no known type"
        if "default" in spec:
            assert name in defaults, f"roles/{role}: {name} has a spec default but is not in defaults/main.yml"
            assert spec["default"] == defaults[name], (
                f"roles/{role}: {name} defaults to {defaults[name]!r} but argument_specs says {spec['default']!r}"
            )
            assert isinstance(defaults[name], TYPES[spec["type"]]), f"roles/{role}: {name} is not a {spec['type']}"
            if "choices" in spec:
                # A list's choices are its elements' (Ansible's argument spec checks each element).
                values = defaults[name] if spec["type"] == "list" else [defaults[name]]
                assert all(v in spec["choices"] for v in values), f"roles/{role}: {name} default is not in its choices"
        else:
            assert name not in defaults, f"roles/{role}: {name} has no spec default but defaults/main.yml sets one"


def test_secrets_have_no_defaults_and_are_no_log() -> None:
    secret = re.compile(r"(password|_token|secrets?|private_key|api_key)$")
    found = 0
    for role in ROLES:
        options = load(ROLES_DIR / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
        for name, spec in options.items():
            if secret.search(name):
                found += 1
                assert "default" not in spec, f"roles/{role}: secret {name} must not have a default"
                assert spec.get("no_log") is True, f"roles/{role}: secret {name} must be no_log in argument_specs"
    assert found >= 5  # redis, admin token, connector secrets, weaviate key, provided TLS key


# --- template output --------------------------------------------------------------------------------------------


def render(role: str, template: str, extra: dict[str, Any]) -> str:
    """Render a role template with its defaults and vars through Ansible's own templating."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    variables: dict[str, Any] = {"ansible_managed": "Managed by Ansible", "ansible_check_mode": False}
    for rel in ("defaults/main.yml", "vars/main.yml"):
        if (ROLES_DIR / role / rel).exists():
            variables.update(load(ROLES_DIR / role / rel) or {})
    variables.update(extra)
    # Role files are trusted templates when Ansible loads them; mark them so here too (ansible-core 2.19).
    variables = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in variables.items()}
    loader = DataLoader()
    loader.set_basedir(str(ROLES_DIR / role))
    templar = Templar(loader=loader, variables=variables)
    source = (ROLES_DIR / role / "templates" / template).read_text(encoding="utf-8")
    return str(templar.template(trust_as_template(source)))


CONNECTORS = {
    "im-connector": {
        "platform": "generic_im",
        "app_id": "cli_a1",
        "webhook_url": "https://assistant.example.com/api/im/callback",
        "reply_url": "https://im.example.com/reply",
        "bot_name": "AI助理",
    }
}
SECRETS = {"im-connector": {"app_secret": "whsec_dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE="}}
PROBE_SECRET = "whsec_cHJvYmUtc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMh"  # pragma: allowlist secret


def test_assistant_config_is_accepted_by_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The role's assistant.yaml, connectors.yaml and secrets.env load through the service's own settings code."""
    from ai_assistant.settings import load_settings, read_connectors_file

    extra = {
        "assistant_wheel": "/x/ai_assistant-0.1.0-py3-none-any.whl",
        "assistant_redis_password": "r3dis",
        "assistant_admin_token": "admintoken",
        "assistant_connectors": CONNECTORS,
        "assistant_connector_secrets": SECRETS,
        "assistant_config_dir": str(tmp_path),
        "assistant_alerts_token": "alerttoken",
        "assistant_alerts_connector": "im-connector",
        "assistant_alerts_chat_id": "ops",
        "assistant_deploy_probe_secret": PROBE_SECRET,
    }
    (tmp_path / "assistant.yaml").write_text(render("assistant", "assistant.yaml.j2", extra))
    (tmp_path / "connectors.yaml").write_text(render("assistant", "connectors.yaml.j2", extra))
    (tmp_path / "sensitive_words.txt").write_text("")
    env = render("assistant", "secrets.env.j2", extra)
    assert "whsec_" not in (tmp_path / "connectors.yaml").read_text()  # secrets only travel in secrets.env
    for line in env.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    settings = load_settings(tmp_path)
    assert settings.store.backend == "redis"
    assert settings.store.redis_url is not None
    assert settings.store.redis_url.get_secret_value() == "redis://ai-assistant:r3dis@127.0.0.1:6379/0"
    assert settings.admin.token is not None and settings.admin.token.get_secret_value() == "admintoken"
    assert settings.server.metrics_port == 9464
    assert settings.alerts.connector == "im-connector" and settings.alerts.chat_id == "ops"
    _, connectors = read_connectors_file(tmp_path)
    assert connectors["im-connector"]["app_secret"] == SECRETS["im-connector"]["app_secret"]
    assert connectors["im-connector"]["bot_name"] == "AI助理"
    # The deploy gate's probe: loopback only, its secret from secrets.env, valid for the service's own model.
    from ai_assistant.connectors.probe import ProbeConfig

    probe = ProbeConfig.model_validate(connectors["deploy_probe"])
    assert probe.app_secret.get_secret_value() == PROBE_SECRET
    assert [str(n) for n in probe.allowed_cidrs] == ["127.0.0.1/32", "::1/128"]


def test_the_probe_connector_follows_assistant_deploy_probe() -> None:
    """Off: no probe connector nor its secret; on without a given secret: the one generated on the host (slurped)."""
    import base64

    base = {"assistant_connectors": CONNECTORS, "assistant_connector_secrets": SECRETS}
    off = {**base, "assistant_deploy_probe": False}
    assert "deploy_probe" not in yaml.safe_load(render("assistant", "connectors.yaml.j2", off))
    assert "DEPLOY_PROBE" not in render(
        "assistant", "secrets.env.j2", {**off, "assistant_admin_token": "t", "assistant_redis_password": "r"}
    )
    generated = {**base, "__assistant_probe_secret_file": {"content": base64.b64encode(PROBE_SECRET.encode()).decode()}}
    env = render(
        "assistant", "secrets.env.j2", {**generated, "assistant_admin_token": "t", "assistant_redis_password": "r"}
    )
    assert f"AI_ASSISTANT_SECRET_DEPLOY_PROBE_APP_SECRET={PROBE_SECRET}" in env.splitlines()
    on = yaml.safe_load(render("assistant", "connectors.yaml.j2", generated))
    assert on["deploy_probe"]["app_secret"] == "${AI_ASSISTANT_SECRET_DEPLOY_PROBE_APP_SECRET}"


def test_nftables_template_splits_ipv4_and_ipv6() -> None:
    out = render(
        "firewall",
        "nftables.conf.j2",
        {
            "firewall_admin_cidrs": ["192.0.2.0/28", "2001:db8::/64"],
            "firewall_lb_cidrs": ["198.51.100.0/28"],
            "firewall_monitoring_cidrs": ["192.0.2.20/32"],
            "firewall_extra_rules": [{"port": 8081, "proto": "tcp", "cidrs": ["10.1.0.0/16"], "comment": 'a "q"'}],
        },
    )
    assert "policy drop;" in out and out.count("policy drop;") == 2  # input and forward
    assert "elements = { 192.0.2.0/28 }" in out and "elements = { 2001:db8::/64 }" in out
    assert "tcp dport 22 ip6 saddr @admin6" in out and "tcp dport 22 ip saddr @admin4" in out
    assert "@lb6" not in out  # no IPv6 load balancer given: no empty set, no rule
    assert "tcp dport 80 " not in out  # no ACME sources: port 80 stays closed
    assert 'comment "a q"' in out


def test_egress_only_ruleset_opens_no_web_port_but_keeps_ssh_monitoring_and_extra_rules() -> None:
    base = {
        "firewall_admin_cidrs": ["192.0.2.0/28"],
        "firewall_monitoring_cidrs": ["192.0.2.20/32"],
        "firewall_extra_rules": [{"port": 443, "proto": "tcp", "cidrs": ["192.0.2.20/32"], "comment": "alerts"}],
    }
    web = {"firewall_lb_cidrs": ["198.51.100.0/28"], "firewall_acme_cidrs": ["0.0.0.0/0"]}
    public = render("firewall", "nftables.conf.j2", base | web)
    assert "tcp dport 443 ip saddr @lb4 accept" in public and "tcp dport 80 ip saddr @acme4 accept" in public
    # The role refuses these lists with `none` (bad-input case below); the ruleset ignores them all the same.
    none = render("firewall", "nftables.conf.j2", base | web | {"firewall_ingress": "none"})
    assert "@lb4" not in none and "@acme4" not in none and "198.51.100.0/28" not in none
    assert "tcp dport 80 " not in none
    assert [line.strip() for line in none.splitlines() if "dport 443" in line] == [
        'tcp dport 443 ip saddr { 192.0.2.20/32 } accept comment "alerts"'
    ]
    assert "tcp dport 22 ip saddr @admin4" in none and "ip saddr @monitoring4 accept" in none


def test_nginx_template_routes_and_limits() -> None:
    out = render(
        "reverse_proxy",
        "nginx.conf.j2",
        {"reverse_proxy_server_names": ["a.example.com"], "reverse_proxy_admin_allow": ["192.0.2.0/28"]},
    )
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in out
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in out
    admin = out.split("location /admin/ {", 1)[1].split("}", 1)[0]
    assert "allow 192.0.2.0/28;" in admin and "deny all;" in admin
    assert "location /metrics {\n\t\t\treturn 404;" in out
    assert "client_max_body_size 1m;" in out and "limit_req zone=webhooks burst=40 nodelay;" in out


def test_redis_acl_stores_only_a_hash() -> None:
    out = render("redis", "users.acl.j2", {"redis_acl_password": "s3cret-value", "redis_backup_acl_password": "b4ck"})
    assert "s3cret-value" not in out and "b4ck" not in out
    assert "\nuser default off " in "\n" + out  # no one authenticates as it (see the template for its permissions)
    assert "#" + __import__("hashlib").sha256(b"s3cret-value").hexdigest() in out
    assert "#" + __import__("hashlib").sha256(b"b4ck").hexdigest() in out


def test_weaviate_memory_follows_the_tier() -> None:
    env = render("weaviate", "weaviate.env.j2", {"weaviate_api_key_value": "k", "weaviate_tier": "basic"})
    unit = render("weaviate", "weaviate.service.j2", {"weaviate_tier": "enterprise"})
    assert "GOMEMLIMIT=819MiB" in env and "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=false" in env
    assert "--memory 4g" in unit and "--network=host" in unit and "--cap-drop all" in unit


def test_tgi_unit_uses_the_models_volume_and_int8() -> None:
    unit = render("model_server", "model-server-tgi.service.j2", {"model_server_backend": "tgi"})
    assert "--volume /data/models:/data" in unit
    assert "--quantize bitsandbytes" in unit
    assert "HF_HUB_OFFLINE=1" in unit


# --- bad input ----------------------------------------------------------------------------------------------------

# Past the assistant role's wheel check (the fixture writes an empty file by that name) to the asserts after it.
_FAKE_WHEEL = "FAKE_WHEEL"
# A wheelhouse with (an empty file named as) uv's wheel, which the roles install with; "/tmp" has none.
_FAKE_WHEELHOUSE = "FAKE_WHEELHOUSE"
_EMPTY_WHEELHOUSE = "EMPTY_WHEELHOUSE"
_UV_WHEEL = f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
_ASSISTANT_PREFLIGHT = {
    "assistant_wheel": _FAKE_WHEEL,
    "assistant_wheelhouse": _FAKE_WHEELHOUSE,
    "assistant_redis_password": "r",
}


def fake_wheelhouse(where: Path) -> Path:
    house = where / "wheelhouse"
    house.mkdir(exist_ok=True)
    (house / _UV_WHEEL).write_bytes(b"")
    return house


def _mismatched_tls_pair() -> tuple[str, str]:
    """A self-signed certificate and a key that is not its own (issue 23: the pair is checked before install)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .sign(cert_key, hashes.SHA256())
    )
    pem_key = other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key.decode()


_TLS_CERT, _TLS_OTHER_KEY = _mismatched_tls_pair()

BAD_INPUT: dict[str, tuple[str, dict[str, Any], str]] = {
    "apparmor-profile-bad-name": (
        "apparmor_profile",
        {"apparmor_profile_name": "../x", "apparmor_profile_rules": [], "apparmor_profile_units": []},
        "apparmor_profile_name: letters, digits, . _ - only (it is also the file name), got ../x",
    ),
    "apparmor-profile-units-without-handler": (
        "apparmor_profile",
        {"apparmor_profile_name": "x", "apparmor_profile_rules": [], "apparmor_profile_units": ["x.service"]},
        "apparmor_profile_restart_handler: required with apparmor_profile_units",
    ),
    "apparmor-profile-bad-unit": (
        "apparmor_profile",
        {
            "apparmor_profile_name": "x",
            "apparmor_profile_rules": [],
            "apparmor_profile_units": ["x.service", "y.socket"],
            "apparmor_profile_restart_handler": "Restart x",
        },
        "apparmor_profile_units: each a name.service, got y.socket",
    ),
    "firewall-no-admin": ("firewall", {"firewall_admin_cidrs": []}, "firewall_admin_cidrs is empty"),
    "firewall-bad-cidr": (
        "firewall",
        {"firewall_admin_cidrs": ["192.0.2.1/32"], "firewall_lb_cidrs": ["10.0.0.0/8", "lb.example.com"]},
        "firewall_lb_cidrs: not an IPv4/IPv6 address or CIDR: lb.example.com",
    ),
    "firewall-wrong-type": ("firewall", {"firewall_ssh_port": "twenty-two"}, "firewall_ssh_port"),
    "firewall-egress-only-with-lb": (
        "firewall",
        {
            "firewall_ingress": "none",
            "firewall_admin_cidrs": ["192.0.2.1/32"],
            "firewall_lb_cidrs": ["10.0.0.0/24"],
            "firewall_acme_cidrs": ["0.0.0.0/0"],
        },
        "firewall_ingress is none (egress-only: nothing may reach 443 or 80) but these are not empty: "
        "firewall_lb_cidrs, firewall_acme_cidrs; empty them or set firewall_ingress to public",
    ),
    "firewall-unknown-ingress": ("firewall", {"firewall_ingress": "private"}, "firewall_ingress"),
    "tls-no-domains": ("tls", {}, "tls_domains: at least one DNS name is required"),
    "tls-provided-no-key": (
        "tls",
        {"tls_mode": "provided", "tls_domains": ["a.example.com"], "tls_provided_certificate": "x"},
        "tls_provided_certificate and tls_provided_private_key are required",
    ),
    "tls-unknown-mode": ("tls", {"tls_mode": "selfmade", "tls_domains": ["a"]}, "tls_mode"),
    "tls-provided-key-mismatch": (
        "tls",
        {
            "tls_mode": "provided",
            "tls_domains": ["a.example.com"],
            "tls_provided_certificate": _TLS_CERT,
            "tls_provided_private_key": _TLS_OTHER_KEY,
            # The check must stop the run before anything is written here.
            "tls_dir": "/nonexistent/tls-must-stay-absent",
        },
        "tls_provided_private_key: does not match the public key of tls_provided_certificate",
    ),
    "firewall-egress-drop-no-allowlist": (
        "firewall",
        {"firewall_admin_cidrs": ["192.0.2.1/32"], "firewall_egress_policy": "drop"},
        "firewall_egress_allow is empty but firewall_egress_policy is drop",
    ),
    "firewall-egress-bad-cidr": (
        "firewall",
        {
            "firewall_admin_cidrs": ["192.0.2.1/32"],
            "firewall_egress_allow": [{"cidrs": ["mirror.example.com"], "ports": [443]}],
        },
        "firewall_egress_allow: not an IPv4/IPv6 address or CIDR: mirror.example.com",
    ),
    "firewall-unknown-egress-policy": (
        "firewall",
        {"firewall_admin_cidrs": ["192.0.2.1/32"], "firewall_egress_policy": "reject"},
        "firewall_egress_policy",
    ),
    "volumes-long-label": ("volumes", {"volumes_fs_label": "a-label-far-too-long"}, "volumes_fs_label:"),
    "proxy-no-names": ("reverse_proxy", {}, "reverse_proxy_server_names: at least one host name is required"),
    "proxy-bad-path": (
        "reverse_proxy",
        {"reverse_proxy_server_names": ["a"], "reverse_proxy_webhook_paths": ["api/im/"]},
        "reverse_proxy_webhook_paths: every path must start with /",
    ),
    "assistant-no-wheel": (
        "assistant",
        {"assistant_wheel": "/nonexistent/ai_assistant-0.1.0-py3-none-any.whl", "assistant_wheelhouse": "/tmp"},
        "assistant_wheel: /nonexistent/ai_assistant-0.1.0-py3-none-any.whl is not an ai_assistant wheel",
    ),
    "assistant-no-uv": (
        "assistant",
        {"assistant_wheel": _FAKE_WHEEL, "assistant_wheelhouse": _EMPTY_WHEELHOUSE, "assistant_redis_password": "r"},
        "assistant_wheelhouse: no uv-*.whl in",
    ),
    "assistant-probe-name-taken": (
        "assistant",
        {**_ASSISTANT_PREFLIGHT, "assistant_connectors": {"deploy_probe": {"platform": "slack"}}},
        "assistant_connectors.deploy_probe: the name is the deploy gate's probe connector",
    ),
    "assistant-probe-bad-secret": (
        "assistant",
        {**_ASSISTANT_PREFLIGHT, "assistant_deploy_probe_secret": "not-a-whsec"},  # pragma: allowlist secret
        "assistant_deploy_probe_secret: must be whsec_<base64>",
    ),
    "model-url-no-sha": (
        "model_server",
        {
            "model_server_llamacpp_wheelhouse": _FAKE_WHEELHOUSE,
            "model_server_model_url": "https://models.example.com/m.gguf",
        },
        "model_server_model_sha256: a 64-hex-digit SHA-256 is required",
    ),
    "model-no-uv": (
        "model_server",
        {"model_server_llamacpp_wheelhouse": "/nonexistent", "model_server_model_src": "/m.gguf"},
        "model_server_llamacpp_wheelhouse: no uv-*.whl in /nonexistent on the controller",
    ),
    "weaviate-unknown-tier": ("weaviate", {"weaviate_tier": "huge"}, "weaviate_tier"),
    "journal-upload-plain-http": (
        "journal_upload",
        {"journal_upload_url": "http://10.0.3.10:19532"},
        "journal_upload_url: expected https://ADDRESS:PORT",
    ),
    "backup-no-bucket": ("backup", {"backup_s3_endpoint": "s3.eu-west-1.amazonaws.com"}, "backup_bucket"),
    "backup-short-key": (
        "backup",
        {
            "backup_s3_endpoint": "s3.x.amazonaws.com",
            "backup_bucket": "ai-backups",
            "backup_restic_password": "short",  # pragma: allowlist secret
        },
        "backup_restic_password: at least 16 characters",
    ),
    "backup-half-s3-keys": (
        "backup",
        {
            "backup_s3_endpoint": "s3.x.amazonaws.com",
            "backup_bucket": "ai-backups",
            "backup_restic_password": "a-long-enough-repository-key",  # pragma: allowlist secret
            "backup_s3_access_key_id": "AKIAEXAMPLE",
        },
        "are set together or not at all",
    ),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One ansible-playbook run: each case includes its role in a block and records the failure message."""
    work = tmp_path_factory.mktemp("bad-input")
    out = work / "results.json"
    wheel = work / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    empty = work / "empty-wheelhouse"
    empty.mkdir()
    fakes = {_FAKE_WHEEL: str(wheel), _FAKE_WHEELHOUSE: str(fake_wheelhouse(work)), _EMPTY_WHEELHOUSE: str(empty)}
    tasks = []
    for case, (role, given, _) in BAD_INPUT.items():
        variables = {k: fakes.get(v, v) if isinstance(v, str) else v for k, v in given.items()}
        tasks.append(
            {
                "name": case,
                "block": [
                    {"name": f"{case}: include", "ansible.builtin.include_role": {"name": role}, "vars": variables},
                    {
                        "name": f"{case}: not refused",
                        "ansible.builtin.set_fact": {
                            "results": "{{ results | combine({'" + case + "': 'NOT REFUSED'}) }}"
                        },
                    },
                ],
                "rescue": [
                    {
                        "name": f"{case}: record",
                        "ansible.builtin.set_fact": {
                            "results": "{{ results | combine({'"
                            + case
                            + "': ansible_failed_result.msg | default('') | string}) }}"
                        },
                    }
                ],
            }
        )
    tasks.append(
        {
            "name": "write",
            "ansible.builtin.copy": {"content": "{{ results | to_json }}", "dest": str(out)},
            "check_mode": False,
        }
    )
    playbook = [{"name": "bad input", "hosts": "localhost", "gather_facts": False, "become": False,
                 "vars": {"results": {}}, "tasks": tasks}]  # fmt: skip
    (work / "bad.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check", str(work / "bad.yml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ansible_env(),
        timeout=600,
    )
    assert out.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_stops_with_a_one_line_message(case: str, bad_input_results: dict[str, str]) -> None:
    _, _, expected = BAD_INPUT[case]
    msg = bad_input_results[case]
    assert msg != "NOT REFUSED", f"{case}: the role accepted bad input"
    assert expected in msg, f"{case}: {msg!r}"
    assert "Traceback" not in msg


def test_readme_variable_tables_match_argument_specs() -> None:
    from tests.roles.readme_vars import BEGIN, render

    for role in ROLES:
        text = (ROLES_DIR / role / "README.md").read_text(encoding="utf-8")
        assert BEGIN in text, f"roles/{role}/README.md has no generated Variables section"
        assert render(role, text) == text, (
            f"roles/{role}/README.md is out of date: run .venv/bin/python -m tests.roles.readme_vars --write"
        )


def _role_options() -> dict[str, dict[str, Any]]:
    return {
        role: load(ROLES_DIR / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"] for role in ROLES
    }


def _check_role_vars(names: list[str], where: str) -> int:
    options = _role_options()
    checked = 0
    for name in names:
        role = next((r for r in sorted(options, key=len, reverse=True) if name.startswith(f"{r}_")), None)
        if role is None:
            continue
        checked += 1
        assert name in options[role], f"{where}: {name} is not an option of roles/{role} (meta/argument_specs.yml)"
    return checked


def test_playbook_group_vars_use_real_role_options() -> None:
    checked = 0
    for path in sorted((REPO / "playbooks" / "group_vars").glob("*.yml")):
        checked += _check_role_vars(list(load(path) or {}), f"playbooks/group_vars/{path.name}")
    inventory = load(REPO / "playbooks/inventory/example.yml")

    def walk(node: Any) -> list[str]:
        names: list[str] = []
        if isinstance(node, dict):
            for key, value in node.items():
                names.append(str(key))
                names.extend(walk(value))
        return names

    checked += _check_role_vars(walk(inventory), "playbooks/inventory/example.yml")
    assert checked >= 10


def test_variables_infra_hands_over_are_role_options() -> None:
    """infra/program.py's inventory variables and infra/secrets.py's secret variables reach real role options."""
    program = (REPO / "infra" / "program.py").read_text(encoding="utf-8")
    secrets_py = (REPO / "infra" / "secrets.py").read_text(encoding="utf-8")
    if "SECRET_VARS" not in secrets_py:
        pytest.fail("infra/secrets.py no longer defines SECRET_VARS: update this contract test")
    names = re.findall(r'"([a-z][a-z0-9_]+)":', program)
    block = secrets_py.split("SECRET_VARS = (", 1)[1].split(")", 1)[0]
    names += re.findall(r'"([a-z_]+)"', block)
    checked = _check_role_vars(names, "infra hand-off")
    assert checked >= 8


def run_tagged(work: Path, play: list[dict[str, Any]], tags: str) -> str:
    """ansible-playbook --tags TAGS on localhost (local connection) with the repository's roles; its output."""
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--tags", tags, "play.yml"],
        capture_output=True,
        text=True,
        cwd=work,
        env={**ansible_env(), "ANSIBLE_ROLES_PATH": str(REPO / "roles")},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize(
    ("mode", "certificate"),
    [
        ("acme", "/etc/letsencrypt/live/ai-assistant/fullchain.pem"),
        ("internal_ca", "/etc/ssl/ai-assistant/ai-assistant.crt"),
    ],
)
def test_a_run_that_skips_tls_still_knows_the_certificate_paths(tmp_path: Path, mode: str, certificate: str) -> None:
    """`--tags volumes` skips the tls tasks but not reverse_proxy's argument check (always tagged), which reads the
    certificate paths through group_vars/assistant.yml: they must follow from the tls inputs, not from a tls task."""
    group_vars = load(REPO / "playbooks/group_vars/assistant.yml")
    play = [{
        "hosts": "localhost", "gather_facts": False, "become": False,
        "vars": {"tls_domains": ["example.test"], "tls_mode": mode,
                 **{k: v for k, v in group_vars.items() if k.startswith("reverse_proxy_tls_")},
                 "reverse_proxy_server_names": "{{ tls_domains }}"},
        "roles": ["tls", "reverse_proxy"],
        "tasks": [{"ansible.builtin.debug": {"msg": "cert={{ reverse_proxy_tls_certificate_file }}"},
                   "tags": ["volumes"]}],
    }]  # fmt: skip
    assert f"cert={certificate}" in run_tagged(tmp_path, play, "volumes")


def _includes(role_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((role_dir / "tasks").glob("*.yml")):
        for task in load(path) or []:
            for key in ("ansible.builtin.include_tasks", "include_tasks"):
                if key in task:
                    found.append((f"{path.relative_to(REPO)}: {task.get('name')}", task))
    return found


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir()))
def test_includes_pass_their_tags_on_to_the_included_tasks(role: str) -> None:
    """Tags on an include_tasks select the include, not what it includes: without `apply: {tags: ...}`,
    `ansible-playbook site.yml --tags tls` runs the include and skips every task in the file (shown below)."""
    for where, task in _includes(ROLES_DIR / role):
        tags = set(task.get("tags") or [])
        spec = task.get("ansible.builtin.include_tasks", task.get("include_tasks"))
        applied = set((spec.get("apply") or {}).get("tags") or []) if isinstance(spec, dict) else set()
        assert tags <= applied, f"{where}: tags {sorted(tags)} are not applied to the included tasks"


def test_a_tagged_run_skips_included_tasks_unless_the_include_applies_its_tags(tmp_path: Path) -> None:
    """The premise of the check above, on the real ansible-playbook (localhost, debug tasks only)."""
    (tmp_path / "inner.yml").write_text(yaml.safe_dump([{"ansible.builtin.debug": {"msg": "inner ran via {{ how }}"}}]))
    play = [{
        "hosts": "localhost", "gather_facts": False, "become": False,
        "tasks": [
            {"ansible.builtin.include_tasks": "inner.yml", "vars": {"how": "bare"}, "tags": ["t"]},
            {"ansible.builtin.include_tasks": {"file": "inner.yml", "apply": {"tags": ["t"]}}, "vars": {"how": "apply"},
             "tags": ["t"]},
        ],
    }]  # fmt: skip
    out = run_tagged(tmp_path, play, "t")
    assert "inner ran via apply" in out
    assert "inner ran via bare" not in out


# Secret values the no-log check below hands to the assistant role; none may appear in Ansible's output.
_LEAK_CANARIES = {
    "app_secret": "canary-app-secret-7f3a9c",  # pragma: allowlist secret
    "other_secret": "canary-other-secret-51be20",  # pragma: allowlist secret
    "alerts_token": "canary-alerts-token-0d4e88",
    "redis_password": "canary-redis-password-a61f07",  # pragma: allowlist secret
}


@pytest.mark.parametrize("verbosity", ["-v", "-vvv"])
def test_no_secret_in_ansible_output_even_when_preflight_fails(tmp_path: Path, verbosity: str) -> None:
    """The real ansible-playbook (localhost, check mode) runs the assistant role's preflight with connector secrets:
    once where the connector checks pass and the alerts check fails, once where a connector check itself fails on a
    secret's connector. Loop items and failed results are printed in full at -v, so a check that loops over the
    secrets dict would show app_secret; none of the values may appear, while the one-line messages must."""
    wheel = tmp_path / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    c = _LEAK_CANARIES
    common = {
        "assistant_wheel": str(wheel),
        "assistant_wheelhouse": str(fake_wheelhouse(tmp_path)),
        "assistant_redis_password": c["redis_password"],
        "assistant_alerts_token": c["alerts_token"],
    }
    connectors = {"im-connector": {"platform": "generic_im", "app_id": "cli_1"}}
    cases = {
        "alerts": {
            **common,
            "assistant_connectors": {**connectors, "ops": {"platform": "generic_im"}},
            "assistant_connector_secrets": {"im-connector": {"app_secret": c["app_secret"]},
                                            "ops": {"app_secret": c["other_secret"]}},
        },
        "plain": {
            **common,
            "assistant_alerts_connector": "im-connector",
            "assistant_alerts_chat_id": "ops",
            "assistant_connectors": {**connectors, "ops": {"platform": "generic_im", "app_secret": "x"}},
            "assistant_connector_secrets": {"im-connector": {"app_secret": c["app_secret"]},
                                            "ops": {"app_secret": c["other_secret"]}},
        },
    }  # fmt: skip
    tasks = [
        {
            "name": f"case {name}",
            "block": [{"ansible.builtin.include_role": {"name": "assistant"}, "vars": variables}],
            "rescue": [{"ansible.builtin.debug": {"msg": f"case {name} stopped"}}],
        }
        for name, variables in cases.items()
    ]
    play = [{"hosts": "localhost", "gather_facts": False, "become": False, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check", verbosity, "play.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**ansible_env(), "ANSIBLE_ROLES_PATH": str(REPO / "roles")},
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # Both cases really reached the checks that handle the secrets, and stopped where they should.
    assert "case alerts stopped" in out and "case plain stopped" in out, out[-4000:]
    assert "assistant_alerts_connector and assistant_alerts_chat_id: required" in out, out[-4000:]
    assert "assistant_connectors.ops: secret fields belong in assistant_connector_secrets" in out, out[-4000:]
    leaked = [name for name, value in c.items() if value in out]
    assert not leaked, f"secret values printed at {verbosity}: {leaked}"


def test_preflight_refuses_a_ca_for_a_plain_http_model_server_or_weaviate(tmp_path: Path) -> None:
    """The assistant role's preflight (real ansible-playbook, check mode, --tags assistant_preflight: the asserts
    only) with a model server CA or a Weaviate CA: an http:// URL stops with one line (the service would refuse
    engine.ca_file and knowledge.store.ca_file too), an https:// one passes."""
    wheel = tmp_path / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    common = {
        "assistant_wheel": str(wheel),
        "assistant_wheelhouse": str(fake_wheelhouse(tmp_path)),
        # Never reached (preflight only, check mode); here all the same should a tag slip.
        "assistant_install_dir": str(tmp_path / "install"),
        "assistant_config_dir": str(tmp_path / "config"),
        "assistant_redis_password": "r3dis",  # pragma: allowlist secret
    }
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    engine = {"assistant_engine_ca_cert": pem}
    knowledge = {
        "assistant_knowledge_ca_cert": pem,
        "assistant_knowledge_store": "weaviate",
        "assistant_knowledge_api_key": "k3y",  # pragma: allowlist secret
    }
    cases = {
        "http": engine | {"assistant_engine_base_url": "http://10.0.2.15:8089/v1"},
        "https": engine | {"assistant_engine_base_url": "https://10.0.2.15/v1"},
        "kb-http": knowledge | {"assistant_knowledge_url": "http://10.0.2.16:8082"},
        "kb-https": knowledge | {"assistant_knowledge_url": "https://10.0.2.16:8082"},
    }
    tag = ["assistant_preflight"]
    tasks = [
        {
            "name": f"case {name}",
            "block": [
                {"ansible.builtin.include_role": {"name": "assistant"},
                 "vars": {**common, **case}, "tags": tag},
                {"ansible.builtin.debug": {"msg": f"case {name} passed"}, "tags": tag},
            ],
            "rescue": [{"ansible.builtin.debug": {"msg": f"case {name} stopped"}, "tags": tag}],
        }
        for name, case in cases.items()
    ]  # fmt: skip
    play = [{"hosts": "localhost", "gather_facts": False, "become": False, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "--check",
            "--tags",
            tag[0],
            "play.yml",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**ansible_env(), "ANSIBLE_ROLES_PATH": str(REPO / "roles")},
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Install" not in out and "changed=0" in out, "only the asserts ran"
    assert "case http stopped" in out and "case http passed" not in out, out[-4000:]
    assert "assistant_engine_ca_cert: only used with an https:// assistant_engine_base_url" in out, out[-4000:]
    assert "case https passed" in out and "case https stopped" not in out, out[-4000:]
    assert "case kb-http stopped" in out and "case kb-http passed" not in out, out[-4000:]
    assert "assistant_knowledge_ca_cert: only used with an https:// assistant_knowledge_url" in out, out[-4000:]
    assert "case kb-https passed" in out and "case kb-https stopped" not in out, out[-4000:]


def test_the_tier_reaches_the_units_and_the_service_settings(tmp_path: Path) -> None:
    """What infra passes per tier (memory limit, worker count) lands in the unit and in a settings file the service
    accepts; without it the unit has no limit at all rather than a made-up one."""
    from ai_assistant.settings import Settings

    base = {"assistant_wheel": "/x/ai_assistant-0.1.0-py3-none-any.whl", "assistant_config_dir": str(tmp_path)}
    tiered = {**base, "assistant_memory_max_mib": 2560, "assistant_worker_concurrency": 4}
    tiered |= {"assistant_lane_long_workers": 2, "assistant_lane_media_workers": 0}
    unit = render("assistant", "ai-assistant.service.j2", tiered)
    assert re.search(r"^MemoryMax=2560M$", unit, re.M), unit
    assert "MemoryMax" not in render("assistant", "ai-assistant.service.j2", base)
    settings = yaml.safe_load(render("assistant", "assistant.yaml.j2", tiered))
    assert Settings(**settings).worker.concurrency == 4
    assert (Settings(**settings).lanes.long_workers, Settings(**settings).lanes.media_workers) == (2, 0)


def test_nginx_believes_the_load_balancer_for_the_client_address() -> None:
    out = render(
        "reverse_proxy",
        "nginx.conf.j2",
        {
            "reverse_proxy_server_names": ["a.example.com"],
            "reverse_proxy_real_ip_from": ["10.40.0.0/24", "10.40.1.0/24"],
        },
    )
    http = out.split("limit_req_zone", 1)[0]  # before the rate-limit zones, which key on the real client address
    assert "set_real_ip_from 10.40.0.0/24;" in http and "set_real_ip_from 10.40.1.0/24;" in http
    assert "real_ip_header X-Forwarded-For;" in http and "real_ip_recursive on;" in http
    # The service's per-connector allowlists read the address nginx hands on: the real client, after realip.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in out
    bare = render("reverse_proxy", "nginx.conf.j2", {"reverse_proxy_server_names": ["a.example.com"]})
    assert "set_real_ip_from" not in bare and "real_ip_header" not in bare


def test_every_synchronize_honours_the_inventorys_ssh_settings() -> None:
    """synchronize runs its own ssh: without use_ssh_args it drops the bastion ProxyCommand and the hand-off's
    known_hosts, and without verify_host it turns host-key checking off (issue 17)."""
    found = []
    for path in sorted(ROLES_DIR.glob("*/tasks/*.yml")):
        for task in load(path) or []:
            args = task.get("ansible.posix.synchronize", task.get("synchronize"))
            if args is None:
                continue
            found.append(path.relative_to(REPO))
            assert args.get("use_ssh_args") is True, f"{path.relative_to(REPO)}: {task.get('name')}: use_ssh_args"
            assert args.get("verify_host") is True, f"{path.relative_to(REPO)}: {task.get('name')}: verify_host"
    assert len(found) >= 2, found  # the assistant's and the model server's wheel copies
