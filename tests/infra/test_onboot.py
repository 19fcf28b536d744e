"""On-boot configuration of autoscaled assistant hosts (issue 19 item 5, docs/adr/0039).

Two stand-ins for a cloud account: Pulumi's mocks (tests/infra/harness.py) for what the program declares, and moto's
server on loopback for S3 and Secrets Manager, which the real uploader (infra.handoff.publish_onboot) and the real
boot script (infra/boot_configure.py, run as its own process) talk to. Certificates are real (cryptography, and
`openssl verify` judges the name constraints).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra import boot_configure as boot
from infra.aws_stack import onboot_policy
from infra.cloudinit import ONBOOT_CONFIG_PATH, ONBOOT_PREFIX, ONBOOT_SCRIPT_PATH
from infra.handoff import HandoffError, build_onboot_artifact, publish_onboot
from infra.secrets import NOT_FOR_ONBOOT, issuing_ca_cert
from infra.tiers import TIERS
from tests.helpers import moto_server
from tests.infra.harness import Run, is_secret, unwrap

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "boot_configure.py"
DOMAIN = "assistant.example.com"


# --- what the program declares (Pulumi mocks) ----------------------------------------------------------------------


def _user_data(run: Run) -> list[tuple[str, dict[str, Any], str]]:
    out = []
    for lt in run.of("aws:ec2/launchTemplate:LaunchTemplate"):
        text = base64.b64decode(lt.props["userData"]).decode()
        out.append((lt.name, yaml.safe_load(text.split("\n", 1)[1]), text))
    return out


def _onboot_conf(doc: dict[str, Any]) -> dict[str, str]:
    entry = next(w for w in doc["write_files"] if w["path"] == ONBOOT_CONFIG_PATH)
    conf: dict[str, str] = json.loads(entry["content"])
    return conf


@pytest.mark.parametrize("tier", TIERS)
def test_the_launch_templates_name_bucket_prefix_secret_and_group_but_hold_no_secret(
    scaled_run: Callable[[str, str], Run], tier: str
) -> None:
    run = scaled_run("aws", tier)
    secret = run.one("aws:secretsmanager/secret:Secret", "hosts-onboot")
    bucket = run.one("aws:s3/bucket:Bucket", "backup-primary")
    groups = {g.name: g for g in run.of("aws:autoscaling/group:Group")}
    templates = _user_data(run)
    assert templates and len(templates) == len(groups)
    for name, doc, text in templates:
        conf = _onboot_conf(doc)
        tags = {t["key"]: t["value"] for t in groups[name].props["tags"]}
        assert conf == {
            "cloud": "aws", "region": conf["region"], "bucket": bucket.outputs["bucket"], "prefix": ONBOOT_PREFIX,
            "secret_id": secret.outputs["arn"], "color": tags["ai-assistant:color"], "zone": tags["ai-assistant:zone"],
        }  # fmt: skip
        assert [ONBOOT_SCRIPT_PATH] in doc["runcmd"] and {"python3-boto3", "gpg"} <= set(doc["packages"])
        script = next(w for w in doc["write_files"] if w["path"] == ONBOOT_SCRIPT_PATH)
        import gzip

        assert gzip.decompress(base64.b64decode(script["content"])) == SCRIPT.read_bytes()
        leaked = [run.secret_names[v] for v in run.generated_secrets if v in text]
        assert not leaked, f"{name}: user data holds the generated secrets {leaked}"
        assert "PRIVATE KEY" not in text and len(text.encode()) < 16384  # AWS's user data limit


@pytest.mark.parametrize("tier", TIERS)
def test_the_instance_role_reads_only_its_secret_and_the_artifact_prefix(
    scaled_run: Callable[[str, str], Run], tier: str
) -> None:
    run = scaled_run("aws", tier)
    secret_arn = run.one("aws:secretsmanager/secret:Secret", "hosts-onboot").outputs["arn"]
    bucket_arn = run.one("aws:s3/bucket:Bucket", "backup-primary").outputs["arn"]
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "hosts-assistant-onboot").props["policy"])
    assert policy["Statement"] == [
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": [secret_arn]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{bucket_arn}/{ONBOOT_PREFIX}/*"]},
    ]
    assert policy == onboot_policy(secret_arn, bucket_arn)
    # The role is the one the launch templates give their hosts, and it has no other policy.
    role = run.one("aws:iam/role:Role", "hosts-assistant")
    attached = [p for p in run.of("aws:iam/rolePolicy:RolePolicy") if p.props["role"] == role.id]
    assert [p.name for p in attached] == ["hosts-assistant-onboot"]
    assert not [a for a in run.of("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.props["role"] == role.id]
    profile = run.one("aws:iam/instanceProfile:InstanceProfile", "hosts-assistant")
    for lt in run.of("aws:ec2/launchTemplate:LaunchTemplate"):
        assert lt.props["iamInstanceProfile"] == {"arn": profile.outputs["arn"]}
    # The data hosts write backups into the same bucket, but not the code the assistant hosts run as root.
    data = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "hosts-data-backup").props["policy"])
    assert {"Effect": "Deny", "Action": ["s3:PutObject"], "Resource": [f"{bucket_arn}/{ONBOOT_PREFIX}/*"]} in (
        data["Statement"]
    )


@pytest.mark.parametrize("tier", TIERS)
def test_the_secret_holds_the_issuing_ca_never_the_root_key(scaled_run: Callable[[str, str], Run], tier: str) -> None:
    run = scaled_run("aws", tier)
    version = run.one("aws:secretsmanager/secretVersion:SecretVersion", "hosts-onboot")
    assert is_secret(version.inputs["secretString"])
    values = json.loads(version.props["secretString"])
    assert not set(NOT_FOR_ONBOOT) & set(values)
    root_key = next(v for v, n in run.secret_names.items() if n == "internal-ca-key")
    assert root_key not in version.props["secretString"]
    issuing = x509.load_pem_x509_certificate(values["issuing_ca_cert_pem"].encode())
    root = x509.load_pem_x509_certificate(values["internal_ca_cert_pem"].encode())
    issuing.verify_directly_issued_by(root)
    assert issuing.extensions.get_extension_for_class(x509.NameConstraints).critical
    # The hand-off publishes into the bucket and prefix the user data names.
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    bucket = run.one("aws:s3/bucket:Bucket", "backup-primary").outputs["bucket"]
    assert json.loads(env["AI_ASSISTANT_ONBOOT"]) == {
        "bucket": bucket,
        "prefix": ONBOOT_PREFIX,
        "region": "ap-southeast-1",
    }


# Alibaba Cloud's on-boot path (KMS secret, RAM role, OSS): tests/infra/test_onboot_alicloud.py.


def test_fixed_hosts_get_no_on_boot_configuration(stack_run: Callable[[str, str], Run]) -> None:
    run = stack_run("aws", "standard")
    assert not run.of("aws:secretsmanager/secret:Secret")
    assert "AI_ASSISTANT_ONBOOT" not in unwrap(run.of("command:local:Command")[0].inputs["environment"])


# --- the issuing CA: name constraints, judged by openssl -----------------------------------------------------------


def _root() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ai-assistant internal CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


def _key() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root_key, root_cert = _root()
    issuing_key = _key()
    cert = issuing_ca_cert(root_key, root_cert, issuing_key, DOMAIN)
    d = tmp_path_factory.mktemp("ca")
    (d / "root.pem").write_text(root_cert)
    return {"root_key": root_key, "root_cert": root_cert, "key": issuing_key, "cert": cert, "dir": d}


def _verify(ca: dict[str, Any], chain: str, tmp: Path, *options: str) -> subprocess.CompletedProcess[str]:
    leaf, _, _ = chain.partition("-----END CERTIFICATE-----\n")
    (tmp / "leaf.pem").write_text(leaf + "-----END CERTIFICATE-----\n")
    (tmp / "chain.pem").write_text(ca["cert"])
    cmd = ["openssl", "verify", *options, "-CAfile", str(ca["dir"] / "root.pem"), "-untrusted", str(tmp / "chain.pem")]
    return subprocess.run([*cmd, str(tmp / "leaf.pem")], capture_output=True, text=True)


def test_the_issuing_ca_is_the_same_for_the_same_inputs(ca: dict[str, Any]) -> None:
    """A `pulumi up` must not see a new certificate (and a new secret version) every time."""
    assert issuing_ca_cert(ca["root_key"], ca["root_cert"], ca["key"], DOMAIN) == ca["cert"]
    assert issuing_ca_cert(ca["root_key"], ca["root_cert"], _key(), DOMAIN) != ca["cert"]


def test_a_host_signs_a_certificate_for_the_assistants_name_that_chains_to_the_root(
    ca: dict[str, Any], tmp_path: Path
) -> None:
    chain, key = boot.sign_host_certificate({boot.ISSUING_KEY: ca["key"], boot.ISSUING_CERT: ca["cert"]}, [DOMAIN], 397)
    done = _verify(ca, chain, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # nginx's certificate serves; the one journal-upload presents to the log host's link only proves a client.
    values = {boot.ISSUING_KEY: ca["key"], boot.ISSUING_CERT: ca["cert"]}
    client, _ = boot.sign_host_certificate(values, [DOMAIN], 397, client=True)
    for cert, purpose, ok in ((chain, "sslserver", True), (client, "sslclient", True), (client, "sslserver", False)):
        done = _verify(ca, cert, tmp_path, "-purpose", purpose)
        assert (done.returncode == 0) == ok, (purpose, done.stdout + done.stderr)
    assert chain.count("BEGIN CERTIFICATE") == 2 and chain.endswith(ca["cert"])  # nginx serves leaf + issuing CA
    assert "PRIVATE KEY" in key


@pytest.mark.parametrize(
    "names",
    [["data-a.internal"], ["monitoring.example.org"], ["example.com"], [DOMAIN, "evil.example.net"]],
    ids=["data-host", "other-domain", "parent-domain", "extra-name"],
)
def test_a_stolen_issuing_ca_cannot_sign_for_other_names(ca: dict[str, Any], tmp_path: Path, names: list[str]) -> None:
    chain, _ = boot.sign_host_certificate({boot.ISSUING_KEY: ca["key"], boot.ISSUING_CERT: ca["cert"]}, names, 30)
    done = _verify(ca, chain, tmp_path)
    assert done.returncode != 0 and "subtree violation" in (done.stdout + done.stderr), done.stdout + done.stderr


def test_a_stolen_issuing_ca_cannot_sign_for_an_address(ca: dict[str, Any], tmp_path: Path) -> None:
    import ipaddress

    key = serialization.load_pem_private_key(ca["key"].encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    issuer = x509.load_pem_x509_certificate(ca["cert"].encode())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
        .issuer_name(issuer.subject).public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(DOMAIN), x509.IPAddress(ipaddress.ip_address("10.40.32.10"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    done = _verify(ca, leaf.public_bytes(serialization.Encoding.PEM).decode(), tmp_path)
    assert done.returncode != 0 and "subtree violation" in (done.stdout + done.stderr), done.stdout + done.stderr


# --- uploader and boot script against moto's server (a stand-in for the cloud account) ------------------------------

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET, SECRET_ID = "onboot-test", "ai-assistant-onboot-test"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint, pytest.MonkeyPatch.context() as env:
        for key, value in KEYS.items():
            env.setenv(key, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def ansible_wheels() -> Path:
    from airgap.build import controller_wheels

    return controller_wheels(Path(sys.executable))


def _site(tmp: Path) -> Path:
    """A repository whose site.yml records what the boot script gave it (the real roles run in the VM module)."""
    root = tmp / "repo"
    (root / "roles").mkdir(parents=True)
    (root / "playbooks").mkdir()
    shutil.copy(REPO / "ansible.cfg", root / "ansible.cfg")
    (root / "playbooks" / "site.yml").write_text(
        "- hosts: assistant\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n        dest: \"{{ onboot_test_out }}\"\n        mode: '0600'\n"
        "        content: \"{{ {'host': inventory_hostname, 'groups': group_names, 'redis': redis_password,\n"
        "          'wheel': assistant_wheel, 'tls': tls_mode, 'chain': tls_provided_certificate | default(''),\n"
        "          'connection': ansible_connection,\n"
        "          'internal_ca': ai_assistant_internal_ca_cert | default('')} | to_json }}\"\n"
    )
    return root


def _inventory(tls_mode: str) -> str:
    doc = {
        "all": {
            "vars": {"ansible_user": "ansible", "ansible_become": True, "tls_mode": tls_mode, "tls_domains": [DOMAIN]},
            "children": {"assistant": {"hosts": {}}, "data": {"hosts": {"data-a": {"ansible_host": "10.0.0.5"}}}},
        }
    }
    return yaml.safe_dump(doc)


def _artifact(tmp: Path, wheels: Path, tls_mode: str = "internal_ca") -> tuple[Path, str]:
    dist = tmp / "dist"
    dist.mkdir()
    wheel = dist / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stand-in wheel: the test playbook only names it")
    house = tmp / "house"
    house.mkdir()
    return build_onboot_artifact(
        _site(tmp), tmp / "out", inventory=_inventory(tls_mode), wheel=wheel, wheelhouse=house, ansible_wheels=wheels
    )


def _config(tmp: Path, secret_id: str = SECRET_ID, prefix: str = "onboot") -> Path:
    conf = {"cloud": "aws", "region": "us-east-1", "bucket": BUCKET, "prefix": prefix, "secret_id": secret_id,
            "color": "green", "zone": "us-east-1b"}  # fmt: skip
    path = tmp / "onboot.json"
    path.write_text(json.dumps(conf))
    return path


def _boot(moto: str, config: Path, work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **KEYS, "AI_ASSISTANT_ONBOOT_ENDPOINT": moto}
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--work", str(work), "--wait", "0", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _put_secret(moto: str, ca: dict[str, Any], secret_id: str = SECRET_ID) -> dict[str, Any]:
    values = {"redis_password": "r3dis-" + os.urandom(8).hex(), "issuing_ca_key_pem": ca["key"],
              "issuing_ca_cert_pem": ca["cert"], "internal_ca_cert_pem": ca["root_cert"]}  # fmt: skip
    sm = boto3.client("secretsmanager", endpoint_url=moto)
    try:
        sm.create_secret(Name=secret_id, SecretString=json.dumps(values))
    except sm.exceptions.ResourceExistsException:
        sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(values))
    return values


def test_a_host_configures_itself_from_what_the_hand_off_published(
    moto: str, ansible_wheels: Path, ca: dict[str, Any], tmp_path: Path
) -> None:
    artifact, digest = _artifact(tmp_path, ansible_wheels)
    key = publish_onboot(artifact, digest, bucket=BUCKET, prefix="onboot", region="us-east-1", endpoint_url=moto)
    # The key the uploader wrote is the one the boot script reads.
    assert key == boot.object_key("onboot", boot.POINTER)
    values = _put_secret(moto, ca)
    out = tmp_path / "recorded.json"
    done = _boot(moto, _config(tmp_path), tmp_path / "work", "--", "-e", f"onboot_test_out={out}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["host"] == "localhost" and seen["connection"] == "local"
    assert {"assistant", "color_green", "zone_us_east_1b"} <= set(seen["groups"])
    assert seen["redis"] == values["redis_password"]
    assert seen["wheel"].endswith("/service/ai_assistant-0.1.0-py3-none-any.whl") and Path(seen["wheel"]).is_file()
    # internal_ca on the controller becomes a certificate this host signed with the issuing CA, chained to the root.
    assert seen["tls"] == "provided" and _verify(ca, seen["chain"], tmp_path).returncode == 0
    # The root the GPU hosts' link certificates chain to, for the engine's and Prometheus's verification.
    assert seen["internal_ca"] == values["internal_ca_cert_pem"]
    # Ansible's output never shows the secret, and no private file stays behind.
    assert values["redis_password"] not in done.stdout + done.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == [f"artifact-{digest[:16]}"]


def test_a_tampered_artifact_stops_with_one_line_and_installs_nothing(
    moto: str, ansible_wheels: Path, ca: dict[str, Any], tmp_path: Path
) -> None:
    artifact, digest = _artifact(tmp_path, ansible_wheels)
    publish_onboot(artifact, digest, bucket=BUCKET, prefix="tampered", region="us-east-1", endpoint_url=moto)
    s3 = boto3.client("s3", endpoint_url=moto)
    s3.put_object(Bucket=BUCKET, Key=f"tampered/{boot.artifact_name(digest)}", Body=b"not the artifact")
    _put_secret(moto, ca)
    done = _boot(moto, _config(tmp_path, prefix="tampered"), tmp_path / "work")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "sha256 mismatch" in done.stderr and f"tampered/{boot.artifact_name(digest)}" in done.stderr
    assert list((tmp_path / "work").iterdir()) == []


def test_a_missing_secret_stops_with_one_line_before_any_download(moto: str, tmp_path: Path) -> None:
    done = _boot(moto, _config(tmp_path, secret_id="no-such-secret"), tmp_path / "work")
    assert done.returncode == 2 and done.stderr.strip() == (
        "ai-assistant on-boot: secret no-such-secret: ResourceNotFoundException"
    )
    assert list((tmp_path / "work").iterdir()) == []


def test_an_unpublished_artifact_stops_with_one_line(moto: str, ca: dict[str, Any], tmp_path: Path) -> None:
    _put_secret(moto, ca)
    done = _boot(moto, _config(tmp_path, prefix="never-published"), tmp_path / "work")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert f"s3://{BUCKET}/never-published/{boot.POINTER}: NoSuchKey" in done.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret_id": ""}, "`secret_id` is missing"),
        ({"cloud": "gcp"}, "cloud `gcp` is not one of aws, alicloud"),
        ({"cloud": "alicloud"}, "`ram_role` is missing (cloud alicloud)"),
    ],
)
def test_a_bad_config_file_is_named_in_one_line(tmp_path: Path, change: dict[str, str], message: str) -> None:
    path = _config(tmp_path)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    done = subprocess.run([sys.executable, str(SCRIPT), "--config", str(path), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == f"ai-assistant on-boot: {path}: {message}"
    assert not (tmp_path / "w").exists()


def test_the_artifact_refuses_a_controller_without_ansible_core_wheels(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(HandoffError, match="ansible-core wheels: none in"):
        _artifact(tmp_path, tmp_path / "none")


def test_a_host_with_its_own_certificate_ships_its_journal_with_it(ca: dict[str, Any], tmp_path: Path) -> None:
    """internal_ca in force: the certificate the host signs is also journal-upload's (the tls role in monitoring.yml's
    journal play takes the same extra vars), and the root it verifies the log host against comes with it."""
    (tmp_path / "inventory.yml").write_text(_inventory("internal_ca"))
    (tmp_path / "manifest.json").write_text(json.dumps({"wheel": "service/x.whl", "wheelhouse": "wheelhouse"}))
    private = tmp_path / "private"
    private.mkdir()
    conf = json.loads(_config(tmp_path).read_text())
    values = {boot.ISSUING_KEY: ca["key"], boot.ISSUING_CERT: ca["cert"], boot.ROOT_CERT: ca["root_cert"]}
    boot.prepare_play(tmp_path, conf, values, private)
    play_vars = json.loads((private / "vars.json").read_text())
    assert play_vars["ai_assistant_log_shipping"] is True
    assert play_vars["ai_assistant_internal_ca_cert"] == ca["root_cert"]
    journal = play_vars["ai_assistant_journal_certificate"]
    assert _verify(ca, journal, tmp_path, "-purpose", "sslclient").returncode == 0
    assert "PRIVATE KEY" in play_vars["ai_assistant_journal_private_key"]
    # The site certificate is this host's own variable, below the journal play's (extra vars would outrank both).
    own = yaml.safe_load((private / "inventory.yml").read_text())["all"]["children"]["assistant"]["hosts"]["localhost"]
    assert own["tls_mode"] == "provided" and "tls_mode" not in play_vars and "tls_provided_certificate" not in play_vars
    assert _verify(ca, own["tls_provided_certificate"], tmp_path, "-purpose", "sslserver").returncode == 0
    assert oct((private / "inventory.yml").stat().st_mode & 0o777) == "0o600"
    # Without the root in the secret nothing could verify the log host: no shipping, rather than a CA of its own.
    (tmp_path / "p2").mkdir()
    boot.prepare_play(tmp_path, conf, {k: v for k, v in values.items() if k != boot.ROOT_CERT}, tmp_path / "p2")
    play_vars = json.loads((tmp_path / "p2" / "vars.json").read_text())
    assert play_vars["ai_assistant_log_shipping"] is False and "ai_assistant_journal_certificate" not in play_vars


def test_a_group_that_sets_another_tls_mode_gets_no_self_signed_certificate(ca: dict[str, Any], tmp_path: Path) -> None:
    """The host's effective tls_mode decides (its groups over `all`), as Ansible will resolve it."""
    doc = yaml.safe_load(_inventory("internal_ca"))
    doc["all"]["children"]["assistant"]["vars"] = {"tls_mode": "acme"}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(doc))
    (tmp_path / "manifest.json").write_text(json.dumps({"wheel": "service/x.whl", "wheelhouse": "wheelhouse"}))
    private = tmp_path / "private"
    private.mkdir()
    conf = json.loads(_config(tmp_path).read_text())
    boot.prepare_play(tmp_path, conf, {"redis_password": "pw-value-123456"}, private)  # pragma: allowlist secret
    play_vars = json.loads((private / "vars.json").read_text())
    assert "tls_mode" not in play_vars and "tls_provided_private_key" not in play_vars
    # An extra var (above the plays' own): the journal-upload play would otherwise make a CA of its own on this host.
    assert play_vars["ai_assistant_log_shipping"] is False
    assert oct((private / "vars.json").stat().st_mode & 0o777) == "0o600"
    # With internal_ca in force and no issuing CA in the secret: one line naming what is missing.
    doc["all"]["children"]["assistant"]["vars"] = {}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(boot.BootError, match="issuing_ca_key_pem and issuing_ca_cert_pem are required"):
        boot.prepare_play(tmp_path, conf, {}, tmp_path / "private2")


@pytest.mark.parametrize("value", ["", "not json", '{"bucket": "b", "region": "r"}'])
def test_publish_refuses_a_bad_target_in_one_line(tmp_path: Path, value: str) -> None:
    env = {**os.environ, "AI_ASSISTANT_ONBOOT": value, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "infra.handoff", "publish", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "ansible hand-off: AI_ASSISTANT_ONBOOT: expected JSON with bucket, prefix and region"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("has_filter", [True, False], ids=["python-3.11.4+", "debian-12-python-3.11.2"])
def test_unpack_refuses_members_that_leave_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_filter: bool
) -> None:
    # Debian 12's python3 is 3.11.2, before tarfile's extraction filters: the boot script failed there on its first
    # VM run (TypeError on filter=). Both paths must unpack a good artifact and refuse an escaping one.
    import io
    import tarfile

    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter")
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    with tarfile.open(good, "w") as tar:
        for part in ("repo/playbooks/site.yml", "inventory.yml", "manifest.json"):
            info = tarfile.TarInfo(part)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
        for part in ("ansible", "collections"):
            info = tarfile.TarInfo(part)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    boot.unpack(good, tmp_path / "ok")
    assert (tmp_path / "ok" / "repo" / "playbooks" / "site.yml").read_bytes() == b"{}"
    for evil in ("../escaped", "/abs-escaped"):
        with tarfile.open(bad, "w") as tar:
            info = tarfile.TarInfo(evil)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
        with pytest.raises(boot.BootError):
            boot.unpack(bad, tmp_path / "no")
        assert not (tmp_path / "escaped").exists()
    with tarfile.open(bad, "w") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc"
        tar.addfile(link)
    with pytest.raises(boot.BootError):
        boot.unpack(bad, tmp_path / "no2")


def test_the_artifact_carries_every_collection_the_roles_name() -> None:
    # The first on-boot VM run stopped at roles/base's first ansible.posix task: the list had missed that collection.
    import re

    from infra.handoff import ONBOOT_COLLECTIONS

    used = set()
    for path in [*(REPO / "roles").rglob("*.yml"), *(REPO / "playbooks").rglob("*.yml")]:
        used |= {
            m.replace(".", "/") for m in re.findall(r"\b(ansible\.posix|community\.[a-z_]+)\.[a-z_]+", path.read_text())
        }
    assert used, "no collection module found: the pattern no longer matches the roles"
    assert used <= set(ONBOOT_COLLECTIONS), f"the on-boot artifact misses {sorted(used - set(ONBOOT_COLLECTIONS))}"


def test_the_artifact_carries_what_the_roles_run_on_their_controller(tmp_path: Path) -> None:
    # A booting host is its own controller: roles/base runs `python -m airgap.verify` there with the repository on
    # PYTHONPATH (the third on-boot VM run failed with "No module named 'airgap'"). Unpacked alone, the artifact's
    # repo/ must run it.
    import tarfile

    wheels = tmp_path / "ansible"
    wheels.mkdir()
    (wheels / "ansible_core-2.19.0-py3-none-any.whl").write_bytes(b"stand-in")
    wheel = tmp_path / "ai_assistant-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stand-in")
    house = tmp_path / "house"
    house.mkdir()
    archive, _ = build_onboot_artifact(
        REPO,
        tmp_path / "out",
        inventory=_inventory("internal_ca"),
        wheel=wheel,
        wheelhouse=house,
        ansible_wheels=wheels,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    repo = tmp_path / "unpacked" / "repo"
    done = subprocess.run(
        [sys.executable, "-m", "airgap.verify", "--fingerprint", "0" * 40, str(tmp_path / "no-bundle")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "No module named" not in done.stderr, done.stderr
    assert done.returncode != 0 and "no-bundle" in (done.stdout + done.stderr)
