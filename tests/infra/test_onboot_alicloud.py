"""On-boot configuration of autoscaled assistant hosts on Alibaba Cloud (issue 19 item 5, docs/adr/0039 amendment).

Two stand-ins for a cloud account, because none can exist here: Pulumi's mocks (tests/infra/harness.py) for what the
program declares, and tests/infra/alicloud_standin.py, a STAND-IN for the Alibaba Cloud account on loopback (ECS
metadata service, KMS GetSecretValue, OSS objects) that checks what the real services check: the metadata token, the
STS token, both request signatures and the declared RAM policy. The real uploader (infra.handoff.publish_onboot, with
Alibaba Cloud's OSS SDK) and the real boot script (infra/boot_configure.py, its own process, a real venv with
ansible-core from the artifact's wheels) talk to it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from infra import boot_configure as boot
from infra.alicloud_stack import ECS_ASSUME_ROLE, onboot_policy
from infra.cloudinit import ONBOOT_PREFIX, ONBOOT_SCRIPT_PATH
from infra.config import ConfigError
from infra.handoff import HandoffError, publish_onboot
from infra.secrets import NOT_FOR_ONBOOT, issuing_ca_cert
from infra.tiers import TIERS
from tests.infra.alicloud_standin import AlibabaStandIn, ram_allows, rpc_expected, running
from tests.infra.harness import Run, config_for, is_secret, run_program, unwrap
from tests.infra.test_onboot import DOMAIN, _artifact, _key, _onboot_conf, _root, _verify

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "boot_configure.py"
REGION, BUCKET, ROLE = "cn-hangzhou", "onboot-test-bucket", "stack-assistant-onboot"
SECRET = "stack-assistant-onboot"  # pragma: allowlist secret


# --- what the program declares (Pulumi mocks) ----------------------------------------------------------------------


def _templates(run: Run) -> list[tuple[Any, dict[str, Any], str]]:
    out = []
    for lt in run.of("alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate"):
        text = base64.b64decode(lt.props["userData"]).decode()
        out.append((lt, yaml.safe_load(text.split("\n", 1)[1]), text))
    return out


@pytest.mark.parametrize("tier", TIERS)
def test_the_kms_secret_holds_what_the_aws_secret_holds(scaled_run: Callable[[str, str], Run], tier: str) -> None:
    ali = scaled_run("alicloud", tier).one("alicloud:kms/secret:Secret", "hosts-onboot")
    aws = scaled_run("aws", tier).one("aws:secretsmanager/secretVersion:SecretVersion", "hosts-onboot")
    assert is_secret(ali.inputs["secretData"]) and is_secret(ali.inputs["versionId"])
    values = json.loads(ali.props["secretData"])
    assert sorted(values) == sorted(json.loads(aws.props["secretString"]))
    assert not set(NOT_FOR_ONBOOT) & set(values)
    run = scaled_run("alicloud", tier)
    root_key = next(v for v, n in run.secret_names.items() if n == "internal-ca-key")
    assert root_key not in ali.props["secretData"]
    issuing = x509.load_pem_x509_certificate(values["issuing_ca_cert_pem"].encode())
    issuing.verify_directly_issued_by(x509.load_pem_x509_certificate(values["internal_ca_cert_pem"].encode()))
    assert ali.props["tags"]["ai-assistant:stack"]
    assert ali.props["secretDataType"] == "text"  # pragma: allowlist secret
    assert ali.props["secretType"] == "Generic"  # pragma: allowlist secret


@pytest.mark.parametrize("tier", TIERS)
def test_the_ram_role_reads_only_its_secret_and_the_artifact_prefix(
    scaled_run: Callable[[str, str], Run], tier: str
) -> None:
    run = scaled_run("alicloud", tier)
    secret = run.one("alicloud:kms/secret:Secret", "hosts-onboot")
    bucket = run.one("alicloud:oss/bucket:Bucket", "backup-primary").outputs["bucket"]
    role = run.one("alicloud:ram/role:Role", "hosts-onboot")
    assert json.loads(role.props["assumeRolePolicyDocument"]) == json.loads(ECS_ASSUME_ROLE)
    assert json.loads(ECS_ASSUME_ROLE)["Statement"][0]["Principal"] == {"Service": ["ecs.aliyuncs.com"]}
    policy = json.loads(run.one("alicloud:ram/policy:Policy", "hosts-onboot").props["policyDocument"])
    assert policy == onboot_policy(secret.outputs["arn"], bucket)
    assert policy["Statement"] == [
        {"Effect": "Allow", "Action": ["kms:GetSecretValue"], "Resource": [secret.outputs["arn"]]},
        {"Effect": "Allow", "Action": ["oss:GetObject"], "Resource": [f"acs:oss:*:*:{bucket}/{ONBOOT_PREFIX}/*"]},
    ]
    # Checked as data: what RAM would allow this role, and what not.
    arn = secret.outputs["arn"]
    assert ram_allows(policy, "kms:GetSecretValue", arn)
    assert not ram_allows(policy, "kms:GetSecretValue", arn.rsplit("/", 1)[0] + "/another-secret")
    assert ram_allows(policy, "oss:GetObject", f"acs:oss:{REGION}:1:{bucket}/{ONBOOT_PREFIX}/current.sha256")
    for action, key in (("oss:GetObject", "restic/config"), ("oss:PutObject", f"{ONBOOT_PREFIX}/x"),
                        ("oss:ListObjects", ""), ("oss:DeleteObject", f"{ONBOOT_PREFIX}/x")):  # fmt: skip
        assert not ram_allows(policy, action, f"acs:oss:{REGION}:1:{bucket}/{key}"), (action, key)
    # The role has this one policy, and it is what every launch template gives its hosts.
    attached = [a for a in run.of("alicloud:ram/rolePolicyAttachment:RolePolicyAttachment")
                if a.props["roleName"] == role.props["roleName"]]  # fmt: skip
    assert [a.props["policyName"] for a in attached] == [policy_name := role.props["roleName"]]
    assert run.one("alicloud:ram/policy:Policy", "hosts-onboot").props["policyName"] == policy_name
    templates = run.of("alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate")
    assert templates and all(t.props["ramRoleName"] == role.props["roleName"] for t in templates)
    # The data hosts write backups into the same bucket, but not the code the assistant hosts run as root.
    data = next(p for p in run.of("alicloud:ram/policy:Policy") if p.name.endswith("data-backup"))
    statements = json.loads(data.props["policyDocument"])["Statement"]
    deny = {"Effect": "Deny", "Action": ["oss:PutObject"], "Resource": [f"acs:oss:*:*:{bucket}/{ONBOOT_PREFIX}/*"]}
    assert deny in statements
    assert not ram_allows({"Statement": statements}, "oss:PutObject", f"acs:oss:r:1:{bucket}/{ONBOOT_PREFIX}/a")
    assert ram_allows({"Statement": statements}, "oss:PutObject", f"acs:oss:r:1:{bucket}/restic/data/a")


@pytest.mark.parametrize("tier", TIERS)
def test_the_launch_templates_name_bucket_prefix_secret_role_and_group_but_hold_no_secret(
    scaled_run: Callable[[str, str], Run], tier: str
) -> None:
    run = scaled_run("alicloud", tier)
    secret = run.one("alicloud:kms/secret:Secret", "hosts-onboot").props["secretName"]
    bucket = run.one("alicloud:oss/bucket:Bucket", "backup-primary").outputs["bucket"]
    role = run.one("alicloud:ram/role:Role", "hosts-onboot").props["roleName"]
    groups = {g.name: g for g in run.of("alicloud:ess/scalingGroup:ScalingGroup")}
    templates = _templates(run)
    assert templates and len(templates) == len(groups)
    for lt, doc, text in templates:
        tags = groups[lt.name].props["tags"]
        assert _onboot_conf(doc) == {
            "cloud": "alicloud", "region": REGION, "bucket": bucket, "prefix": ONBOOT_PREFIX, "secret_id": secret,
            "color": tags["ai-assistant:color"], "zone": tags["ai-assistant:zone"], "ram_role": role,
        }  # fmt: skip
        assert doc["runcmd"][-1] == [ONBOOT_SCRIPT_PATH]
        assert {"python3-venv", "gpg", "ca-certificates"} <= set(doc["packages"])
        assert "python3-boto3" not in doc["packages"]
        script = next(w for w in doc["write_files"] if w["path"] == ONBOOT_SCRIPT_PATH)
        assert gzip.decompress(base64.b64decode(script["content"])) == SCRIPT.read_bytes()
        leaked = [run.secret_names[v] for v in run.generated_secrets if v in text]
        assert not leaked, f"{lt.name}: user data holds the generated secrets {leaked}"
        # Alibaba Cloud takes up to 32 KB of user data before Base64 (CreateLaunchTemplate, UserData:
        # https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-createlaunchtemplate);
        # tests/infra/test_provider_rules.py holds every template to it too.
        assert "PRIVATE KEY" not in text and len(text.encode()) < 32768
    # The hand-off publishes into the bucket the user data names, with the OSS client.
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert json.loads(env["AI_ASSISTANT_ONBOOT"]) == {
        "bucket": bucket, "prefix": ONBOOT_PREFIX, "region": REGION, "cloud": "alicloud"
    }  # fmt: skip
    assert env.get("AI_ASSISTANT_DYNAMIC_INVENTORY")  # the hand-off still converges the first hosts


def test_fixed_hosts_get_no_on_boot_configuration(stack_run: Callable[[str, str], Run]) -> None:
    run = stack_run("alicloud", "standard")
    assert not run.of("alicloud:kms/secret:Secret") and not run.of("alicloud:kms/key:Key")
    assert "AI_ASSISTANT_ONBOOT" not in unwrap(run.of("command:local:Command")[0].inputs["environment"])


def test_a_kms_instance_holds_the_secret_and_its_key() -> None:
    """KMS 3.0 keeps secrets in an instance, encrypted with a key of that instance (the provider requires both)."""
    run = run_program(config_for("alicloud", "standard", autoscaling=True, kmsInstanceId="kst-hzz65f1a2b3c4d5e6f7"))
    key = run.one("alicloud:kms/key:Key", "hosts-onboot-key")
    secret = run.one("alicloud:kms/secret:Secret", "hosts-onboot")
    assert key.props["dkmsInstanceId"] == secret.props["dkmsInstanceId"] == "kst-hzz65f1a2b3c4d5e6f7"
    assert secret.props["encryptionKeyId"] == key.id and key.props["keyUsage"] == "ENCRYPT/DECRYPT"


@pytest.mark.parametrize(
    ("cloud", "overrides", "message"),
    [
        ("aws", {"autoscaling": True}, "ai-assistant:kmsInstanceId: only used on alicloud with autoscaling: true"),
        ("alicloud", {}, "ai-assistant:kmsInstanceId: only used on alicloud with autoscaling: true"),
        ("alicloud", {"autoscaling": True, "kmsInstanceId": "key-123"}, "'key-123' is not a KMS instance id"),
    ],
    ids=["aws", "fixed-hosts", "not-an-instance-id"],
)
def test_a_misplaced_kms_instance_is_named_in_one_line(cloud: str, overrides: dict[str, Any], message: str) -> None:
    run = Run()
    with pytest.raises(ConfigError) as exc:
        run_program(config_for(cloud, "standard", {"kmsInstanceId": "kst-hzz65f1a2b3c4d5e6f7", **overrides}), run=run)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert run.resources == []


# --- the signatures: the stand-in's checks against Alibaba's published example ------------------------------------


def test_the_rpc_signature_matches_alibabas_published_example() -> None:
    """The worked example of the RPC signature document (https://www.alibabacloud.com/help/doc-detail/127287.htm):
    the boot script's signer and the stand-in's check both give its published signature."""
    params = {"Timestamp": "2016-02-23T12:46:24Z", "Format": "XML", "AccessKeyId": "testid",
              "Action": "DescribeRegions", "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "Version": "2014-05-26",
              "SignatureVersion": "1.0"}  # fmt: skip
    published = "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    assert boot.rpc_signature("testsecret", "GET", params) == published
    assert rpc_expected("testsecret", "GET", params) == published
    assert boot.rpc_signature("testsecret", "GET", {**params, "Format": "JSON"}) != published


# --- uploader and boot script against the stand-in account ----------------------------------------------------------


@pytest.fixture(scope="module")
def issuing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root and an issuing CA as the program makes them (tests/infra/test_onboot.py judges them with openssl)."""
    root_key, root_cert = _root()
    key = _key()
    d = tmp_path_factory.mktemp("ca")
    (d / "root.pem").write_text(root_cert)
    return {"key": key, "cert": issuing_ca_cert(root_key, root_cert, key, DOMAIN), "root_cert": root_cert, "dir": d}


@pytest.fixture(scope="module")
def wheels() -> Path:
    from airgap.build import controller_wheels

    return controller_wheels(Path(sys.executable))


@pytest.fixture
def account() -> Iterator[AlibabaStandIn]:
    state = AlibabaStandIn(region=REGION, role=ROLE)
    state.role_policy = onboot_policy(state.secret_arn(SECRET), BUCKET)
    with running(state):
        yield state


def _controller_env(account: AlibabaStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICLOUD_ACCESS_KEY", account.controller[0])
    monkeypatch.setenv("ALICLOUD_SECRET_KEY", account.controller[1])
    monkeypatch.delenv("ALICLOUD_SECURITY_TOKEN", raising=False)


def _config(tmp: Path, **change: str) -> Path:
    conf = {"cloud": "alicloud", "region": REGION, "bucket": BUCKET, "prefix": ONBOOT_PREFIX, "secret_id": SECRET,
            "color": "green", "zone": "cn-hangzhou-i", "ram_role": ROLE, **change}  # fmt: skip
    path = tmp / "onboot.json"
    path.write_text(json.dumps(conf))
    return path


def _boot(account: AlibabaStandIn, config: Path, work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, boot.ENDPOINT_ENV: account.url, boot.METADATA_ENV: account.url}
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--work", str(work), "--wait", "0", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _put_secret(account: AlibabaStandIn, issuing: dict[str, Any]) -> dict[str, Any]:
    values = {"redis_password": "r3dis-" + os.urandom(8).hex(), "issuing_ca_key_pem": issuing["key"],
              "issuing_ca_cert_pem": issuing["cert"], "internal_ca_cert_pem": issuing["root_cert"]}  # fmt: skip
    account.secrets[SECRET] = json.dumps(values)
    return values


def _publish(account: AlibabaStandIn, tmp: Path, wheels: Path) -> str:
    artifact, digest = _artifact(tmp, wheels)
    key = publish_onboot(
        artifact, digest, bucket=BUCKET, prefix=ONBOOT_PREFIX, region=REGION, endpoint_url=account.url, cloud="alicloud"
    )
    assert key == boot.object_key(ONBOOT_PREFIX, boot.POINTER)
    return digest


def _one_line(done: subprocess.CompletedProcess[str], expected: str, work: Path) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip() == f"ai-assistant on-boot: {expected}", done.stderr
    assert not work.exists() or list(work.iterdir()) == []


def test_a_host_configures_itself_from_what_the_hand_off_published(
    account: AlibabaStandIn, wheels: Path, issuing: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _controller_env(account, monkeypatch)
    digest = _publish(account, tmp_path, wheels)
    # The stand-in accepted the OSS SDK's V4 signatures: its check agrees with Alibaba's own client.
    assert account.refused == []
    assert f"oss: controller PutObject {BUCKET}/{ONBOOT_PREFIX}/{boot.artifact_name(digest)}" in account.seen
    values = _put_secret(account, issuing)
    out = tmp_path / "recorded.json"
    done = _boot(account, _config(tmp_path), tmp_path / "work", "--", "-e", f"onboot_test_out={out}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Every request of the boot script passed the stand-in's checks: metadata token, STS token, both signatures, RAM.
    assert account.refused == []
    assert f"kms: GetSecretValue {SECRET}" in account.seen
    assert f"oss: role GetObject {BUCKET}/{ONBOOT_PREFIX}/{boot.POINTER}" in account.seen
    assert f"oss: role GetObject {BUCKET}/{ONBOOT_PREFIX}/{boot.artifact_name(digest)}" in account.seen
    seen = json.loads(out.read_text())
    assert seen["host"] == "localhost" and seen["connection"] == "local"
    assert {"assistant", "color_green", "zone_cn_hangzhou_i"} <= set(seen["groups"])
    assert seen["redis"] == values["redis_password"]
    assert seen["tls"] == "provided" and _verify(issuing, seen["chain"], tmp_path).returncode == 0
    assert values["redis_password"] not in done.stdout + done.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == [f"artifact-{digest[:16]}"]


def test_a_missing_secret_stops_with_one_line_before_any_download(account: AlibabaStandIn, tmp_path: Path) -> None:
    done = _boot(account, _config(tmp_path), tmp_path / "work")
    _one_line(done, f"secret {SECRET}: Forbidden.ResourceNotFound", tmp_path / "work")
    assert not [s for s in account.seen if s.startswith("oss:")]


def test_a_pointer_whose_sha_does_not_match_stops_with_one_line(
    account: AlibabaStandIn, issuing: dict[str, Any], tmp_path: Path
) -> None:
    _put_secret(account, issuing)
    digest = "0" * 64
    account.objects[(BUCKET, f"{ONBOOT_PREFIX}/{boot.POINTER}")] = f"{digest}  {boot.artifact_name(digest)}\n".encode()
    account.objects[(BUCKET, f"{ONBOOT_PREFIX}/{boot.artifact_name(digest)}")] = b"not the artifact the pointer names"
    done = _boot(account, _config(tmp_path), tmp_path / "work")
    _one_line(done, f"oss://{BUCKET}/{ONBOOT_PREFIX}/{boot.artifact_name(digest)}: sha256 mismatch", tmp_path / "work")


def test_a_403_for_the_secret_stops_with_one_line(
    account: AlibabaStandIn, issuing: dict[str, Any], tmp_path: Path
) -> None:
    """A RAM role without kms:GetSecretValue on the secret (a policy that names another one)."""
    _put_secret(account, issuing)
    account.role_policy = onboot_policy(account.secret_arn("another-secret"), BUCKET)
    done = _boot(account, _config(tmp_path), tmp_path / "work")
    _one_line(done, f"secret {SECRET}: Forbidden.NoPermission", tmp_path / "work")
    assert account.refused and "Forbidden.NoPermission" in account.refused[-1]


def test_a_403_for_the_artifact_stops_with_one_line(
    account: AlibabaStandIn, issuing: dict[str, Any], tmp_path: Path
) -> None:
    """The role may read `onboot/` only: a config that points elsewhere is refused by RAM (AccessDenied), which the
    script cannot tell from "not published yet" without ListObjects, so it says both after its wait."""
    _put_secret(account, issuing)
    account.objects[(BUCKET, f"elsewhere/{boot.POINTER}")] = b"anything"
    done = _boot(account, _config(tmp_path, prefix="elsewhere"), tmp_path / "work")
    _one_line(
        done,
        f"oss://{BUCKET}/elsewhere/{boot.POINTER}: AccessDenied "
        "(not published by the hand-off yet, or not readable by this host's role)",
        tmp_path / "work",
    )


def test_a_role_the_instance_does_not_have_stops_with_one_line(account: AlibabaStandIn, tmp_path: Path) -> None:
    done = _boot(account, _config(tmp_path, ram_role="another-role"), tmp_path / "work")
    _one_line(done, "metadata service, RAM role another-role: no credentials (HTTP 404)", tmp_path / "work")


def test_the_stand_in_refuses_what_the_real_account_refuses(
    account: AlibabaStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The checks the passing runs rely on do refuse: a read without a metadata token, a bad OSS signature, a KMS
    request without the STS token."""
    req = urllib.request.Request(f"{account.url}/latest/meta-data/ram/security-credentials/{ROLE}")
    with pytest.raises(urllib.error.HTTPError) as no_token:
        urllib.request.urlopen(req, timeout=30)
    assert no_token.value.code == 401
    conf = json.loads(_config(tmp_path).read_text())
    account.secrets[SECRET] = "{}"
    account.objects[(BUCKET, f"{ONBOOT_PREFIX}/{boot.POINTER}")] = b"x"
    cloud = boot.AlibabaCloud(conf)
    monkeypatch.setattr(cloud, "endpoint", account.url)
    monkeypatch.setattr(cloud, "metadata", account.url)
    assert cloud.get_object(f"{ONBOOT_PREFIX}/{boot.POINTER}") == b"x"  # signed right: served
    signer = boot.oss_v4_authorization
    monkeypatch.setattr(boot, "oss_v4_authorization", lambda *a: signer(*a).replace("Signature=", "Signature=0"))
    with pytest.raises(boot.BootError, match="SignatureDoesNotMatch"):
        cloud.get_object(f"{ONBOOT_PREFIX}/{boot.POINTER}")
    real = cloud.credentials
    monkeypatch.setattr(cloud, "credentials", lambda: (*real()[:2], "not-the-sts-token"))
    with pytest.raises(boot.BootError, match=f"secret {SECRET}: InvalidSecurityToken.Mismatch"):
        cloud.read_secret()
    with pytest.raises(boot.BootError, match="InvalidSecurityToken"):
        cloud.get_object(f"{ONBOOT_PREFIX}/{boot.POINTER}")


def test_publish_without_alibaba_credentials_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in ("ALICLOUD_ACCESS_KEY", "ALICLOUD_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    target = json.dumps({"bucket": BUCKET, "prefix": ONBOOT_PREFIX, "region": REGION, "cloud": "alicloud"})
    env = {**os.environ, "AI_ASSISTANT_ONBOOT": target, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "infra.handoff", "publish", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == (
        "ansible hand-off: ALICLOUD_ACCESS_KEY, ALICLOUD_SECRET_KEY: required to publish the on-boot artifact to OSS"
    )
    assert list(tmp_path.iterdir()) == []


def test_publish_names_the_object_oss_refused(
    account: AlibabaStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALICLOUD_ACCESS_KEY", "LTAI5tNotAKeyOfThisAccount")
    monkeypatch.setenv("ALICLOUD_SECRET_KEY", "wrong")
    artifact = tmp_path / "artifact.tar"
    artifact.write_bytes(b"tar")
    with pytest.raises(HandoffError, match=rf"^oss://{BUCKET}/{ONBOOT_PREFIX}/artifact-0+\.tar: InvalidAccessKeyId$"):
        publish_onboot(artifact, "0" * 64, bucket=BUCKET, prefix=ONBOOT_PREFIX, region=REGION,
                       endpoint_url=account.url, cloud="alicloud")  # fmt: skip
    assert not account.objects


def test_the_boot_scripts_help_names_both_clouds_and_what_alibaba_needs() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0 and "ram_role on alicloud" in text and "security hardening mode" in text
    assert "aws reads the Secrets Manager secret" in text


def test_on_a_host_the_requests_go_to_the_regions_vpc_endpoints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a stand-in's address the script talks to the metadata service, KMS's VPC endpoint and the bucket's
    internal endpoint (no NAT needed); what those answer is what the stand-in plays above."""
    monkeypatch.delenv(boot.ENDPOINT_ENV, raising=False)
    monkeypatch.delenv(boot.METADATA_ENV, raising=False)
    sent: list[tuple[str, str, dict[str, str]]] = []

    def answer(req: urllib.request.Request, dest: Path | None = None) -> tuple[int, bytes]:
        sent.append((req.get_method(), req.full_url, dict(req.header_items())))
        if req.full_url.endswith("/latest/api/token"):
            return 200, b"metadata-token"
        if "/security-credentials/" in req.full_url:
            return 200, json.dumps({"Code": "Success", "AccessKeyId": "STS.a", "AccessKeySecret": "s",
                                    "SecurityToken": "sts-token"}).encode()  # fmt: skip
        if "kms-vpc" in req.full_url:
            return 200, json.dumps({"SecretData": "{}"}).encode()
        return 200, b"pointer"

    monkeypatch.setattr(boot, "_http", answer)
    cloud = boot.AlibabaCloud(json.loads(_config(tmp_path).read_text()))
    assert cloud.read_secret() == "{}" and cloud.get_object(f"{ONBOOT_PREFIX}/{boot.POINTER}") == b"pointer"
    urls = [u.split("?")[0] for _, u, _ in sent]
    assert urls == [
        "http://100.100.100.200/latest/api/token",
        f"http://100.100.100.200/latest/meta-data/ram/security-credentials/{ROLE}",
        f"https://kms-vpc.{REGION}.aliyuncs.com/",
        "http://100.100.100.200/latest/api/token",
        f"http://100.100.100.200/latest/meta-data/ram/security-credentials/{ROLE}",
        f"https://{BUCKET}.oss-{REGION}-internal.aliyuncs.com/{ONBOOT_PREFIX}/{boot.POINTER}",
    ]
    assert sent[0][0] == "PUT" and sent[1][2].get("X-aliyun-ecs-metadata-token") == "metadata-token"
    assert "SecurityToken=sts-token" in sent[2][1] and "Action=GetSecretValue" in sent[2][1]
    oss_headers = {k.lower(): v for k, v in sent[5][2].items()}
    assert oss_headers["x-oss-security-token"] == "sts-token"
    assert oss_headers["authorization"].startswith("OSS4-HMAC-SHA256 Credential=STS.a/")
    assert f"/{REGION}/oss/aliyun_v4_request," in oss_headers["authorization"]


def test_publish_with_a_wrong_secret_is_refused_by_the_signature_check(
    account: AlibabaStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in's V4 check refuses the OSS SDK's request signed with another secret for the same AccessKey."""
    monkeypatch.setenv("ALICLOUD_ACCESS_KEY", account.controller[0])
    monkeypatch.setenv("ALICLOUD_SECRET_KEY", account.controller[1] + "-not")
    artifact = tmp_path / "artifact.tar"
    artifact.write_bytes(b"tar")
    with pytest.raises(HandoffError, match=r"SignatureDoesNotMatch$"):
        publish_onboot(artifact, "0" * 64, bucket=BUCKET, prefix=ONBOOT_PREFIX, region=REGION,
                       endpoint_url=account.url, cloud="alicloud")  # fmt: skip
    assert not account.objects
