"""Runs the real Pulumi program under pulumi.runtime.set_mocks and records what it declares.

A local stand-in only for the cloud accounts: no provider plugin and no Pulumi CLI run. Every resource registration
and every invoke goes through Recorder; an invoke it does not know fails the run, so new lookups must be mocked here.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import runpy
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as psettings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra import program

SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key
PROJECT = "ai-assistant"


def is_secret(v: Any) -> bool:
    return isinstance(v, dict) and v.get(SIG_KEY) == SECRET_SIG


def unwrap(v: Any) -> Any:
    """The value with secret wrappers removed (for checks that look at content, not secrecy)."""
    if is_secret(v):
        return unwrap(v["value"])
    if isinstance(v, dict):
        return {k: unwrap(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unwrap(x) for x in v]
    return v


@dataclass
class Res:
    typ: str
    name: str
    id: str
    inputs: dict[str, Any]  # secrets stay wrapped here
    outputs: dict[str, Any]

    @property
    def props(self) -> dict[str, Any]:
        return unwrap(self.inputs)


@dataclass
class Run:
    resources: list[Res] = field(default_factory=list)
    invokes: list[str] = field(default_factory=list)
    exports: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # name -> (value, is_secret)
    generated_secrets: list[str] = field(default_factory=list)
    secret_names: dict[str, str] = field(default_factory=dict)  # generated value -> the generator's name
    # (type, name) -> the ResourceOptions the program passed (protect, ignore_changes, ...); mocks never see them.
    options: dict[tuple[str, str], pulumi.ResourceOptions] = field(default_factory=dict)

    def opts(self, r: Res) -> pulumi.ResourceOptions:
        return self.options.get((r.typ, r.name)) or pulumi.ResourceOptions()

    def of(self, typ: str) -> list[Res]:
        return [r for r in self.resources if r.typ == typ]

    def by_id(self, id_: str) -> Res:
        return next(r for r in self.resources if r.id == id_)

    def one(self, typ: str, name: str) -> Res:
        found = [r for r in self.of(typ) if r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, found {[r.name for r in self.of(typ)]}"
        return found[0]


class Recorder(pulumi.runtime.Mocks):
    """Returns inputs plus the computed fields the program reads (addresses, names, generated secrets)."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @staticmethod
    def _addr(net: str, name: str) -> str:
        # Derived from the name, not the order: registrations run concurrently, so order varies between runs.
        network = ipaddress.ip_network(net)
        offset = int(hashlib.sha256(name.encode()).hexdigest(), 16) % (network.num_addresses - 2) + 1
        return str(network.network_address + offset)

    def _secret(self, name: str, inputs: dict[str, Any] | None = None) -> str:
        # Distinct per run and per resource, so a scan can find leaks of exactly these values. Shaped like the
        # generator's inputs (length, an upper-case letter when asked), so provider rules see a realistic value.
        inputs = inputs or {}
        digest = hashlib.sha256(f"{name}-{len(self.run.resources)}".encode()).hexdigest()
        value = (("Q" if inputs.get("minUpper") else "") + digest)[: int(inputs.get("length") or 40)]
        self.run.generated_secrets.append(value)
        self.run.secret_names[value] = name
        return value

    def _ec_key(self, name: str) -> tuple[str, str]:
        """A P-384 key derived from the name and the run (distinct per run, like _secret), recorded as a secret."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        seed = int(hashlib.sha256(f"{name}-{len(self.run.resources)}".encode()).hexdigest(), 16)
        key = ec.derive_private_key(seed % (2**380) + 1, ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # A line of the key's base64 stands for it: unique, and unchanged inside JSON (unlike the PEM's newlines).
        needle = pem.splitlines()[2]
        self.run.generated_secrets.append(needle)
        self.run.secret_names[needle] = name
        return pem, public.decode()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        t, name = args.typ, args.name
        out: dict[str, Any] = dict(args.inputs)
        id_ = f"{name}-id"
        if t in ("aws:ec2/instance:Instance", "alicloud:ecs/instance:Instance"):
            out["privateIp"] = self._addr("10.40.32.0/19", name)
            out["publicIp"] = (
                self._addr("203.0.113.0/24", name)
                if args.inputs.get("associatePublicIpAddress") or args.inputs.get("internetMaxBandwidthOut")
                else ""
            )
            id_ = f"i-{name}"
        elif t == "aws:ec2/eip:Eip":
            out["publicIp"] = self._addr("203.0.113.0/24", name)
        elif t == "alicloud:ecs/eipAddress:EipAddress":
            out["ipAddress"] = self._addr("203.0.113.0/24", name)
        elif t == "alicloud:vpc/natGateway:NatGateway":
            out["snatTableIds"] = "stb-1"
        elif t == "aws:lb/loadBalancer:LoadBalancer":
            out |= {
                "dnsName": f"{name}.elb.example",
                "zoneId": "Z1",
                "arn": f"arn:aws:elasticloadbalancing:::{name}",
                "arnSuffix": f"app/{name}/0123456789abcdef",
            }
        elif t == "aws:lb/targetGroup:TargetGroup":
            out["arnSuffix"] = f"targetgroup/{name}/0123456789abcdef"  # what CloudWatch's dimensions take
        elif t == "alicloud:alb/loadBalancer:LoadBalancer":
            out["dnsName"] = f"{name}.alb.example"
        elif t == "aws:s3/bucket:Bucket":
            out |= {"bucket": f"{name}-bucket", "arn": f"arn:aws:s3:::{name}-bucket"}
            id_ = f"{name}-bucket"
        elif t == "alicloud:oss/bucket:Bucket":
            out["bucket"] = f"{name}-bucket"
            id_ = f"{name}-bucket"
        elif t == "random:index/randomPassword:RandomPassword":
            out["result"] = self._secret(name, dict(args.inputs))
        elif t == "tls:index/privateKey:PrivateKey":
            # Real keys and certificates: the program derives the issuing CA's certificate from them (infra/secrets.py).
            out["privateKeyPem"], out["publicKeyPem"] = self._ec_key(name)
        elif t == "tls:index/selfSignedCert:SelfSignedCert":
            out["certPem"] = _self_signed(str(unwrap(args.inputs["privateKeyPem"])), name)
        elif t == "aws:ec2/keyPair:KeyPair":
            out["keyName"] = f"{name}-key"
        elif t == "aws:acm/certificate:Certificate":
            out["domainValidationOptions"] = [
                {"resourceRecordName": "_x.example.com", "resourceRecordType": "CNAME", "resourceRecordValue": "_y.acm"}
            ]
        elif t == "aws:acm/certificateValidation:CertificateValidation":
            out["certificateArn"] = "arn:aws:acm:::certificate/validated"
        elif t == "aws:route53/record:Record":
            out["fqdn"] = str(args.inputs.get("name"))
        elif t == "aws:elasticache/replicationGroup:ReplicationGroup":
            out["primaryEndpointAddress"] = f"master.{name}.cache.example"
        elif t == "alicloud:kvstore/instance:Instance":
            out["connectionDomain"] = f"r-{name}.redis.rds.example"
        elif t == "alicloud:kms/secret:Secret":
            # KMS's ARN format: acs:kms:${region}:${account}:secret/${secret-name}
            out["arn"] = f"acs:kms:cn-hangzhou:1234567890123456:secret/{args.inputs['secretName']}"
            id_ = str(args.inputs["secretName"])
        elif t == "alicloud:kms/key:Key":
            id_ = f"key-{name}"
        elif t == "aws:elasticache/subnetGroup:SubnetGroup":
            out["name"] = f"{name}-subnets"
        elif t == "aws:autoscaling/group:Group":
            out["name"] = f"{name}-asg"
        elif t == "aws:iam/instanceProfile:InstanceProfile":
            out["name"] = f"{name}-profile"
        if "arn" not in out and t.startswith("aws:"):
            out["arn"] = f"arn:aws:mock:::{name}"
        self.run.resources.append(Res(t, name, id_, dict(args.inputs), out))
        return id_, out

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]] | dict[str, Any]:
        self.run.invokes.append(args.token)
        # No invoke is mocked: the program looks nothing up at plan time (images are pinned in the stack config).
        raise AssertionError(f"unmocked invoke {args.token}: add it to tests/infra/harness.py")


def _self_signed(key_pem: str, name: str) -> str:
    """A CA certificate as pulumi-tls makes one (subject O then CN, five years from now)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), f"{name}: the mocked CA key is not an EC key"
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ai-assistant"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=5 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


BASE: dict[str, dict[str, Any]] = {
    "aws": {
        "region": "ap-southeast-1",
        "zones": ["ap-southeast-1a", "ap-southeast-1b"],
        "backupRegion": "ap-northeast-1",
        "dnsZone": "Z0123456789EXAMPLE",
        "imageId": "ami-0123456789abcdef0",
    },
    "alicloud": {
        "region": "cn-hangzhou",
        "zones": ["cn-hangzhou-h", "cn-hangzhou-i"],
        "backupRegion": "cn-shanghai",
        "certificateId": "12345678-cn-hangzhou",
        "imageId": "debian_12_9_x64_20G_alibase_20250117.vhd",
    },
}

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJtestkeyonlyforunittestsxxxxxxxxxxxxxxxxxx ops@example"


# A stand-in pre-signed URL: only its secrecy and its way to the hand-off are checked.
MODEL_URL = "https://models.example.com/qwen.tar?X-Amz-Signature=0123456789abcdef"


def config_for(cloud: str, tier: str, overrides: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """A valid config for cloud x tier; overrides replace keys, None removes a key."""
    cfg: dict[str, Any] = {
        "cloud": cloud,
        "tier": tier,
        "domain": "assistant.example.com",
        "adminCidrs": ["198.51.100.0/24"],
        "sshPublicKey": SSH_KEY,
        "inference": {"mode": "gpu", "imageDigest": "sha256:" + "a" * 64, "model": {"dir": "qwen", "sha256": "b" * 64}},
        "weaviateImageDigest": "sha256:" + "c" * 64,
        "alertReceivers": [{"name": "ops", "email": "ops@example.com"}],
        "alertSmtp": {"smarthost": "smtp.example.com:587", "from": "alertmanager@example.com"},
        **BASE[cloud],
    }
    cfg.update(overrides or {})
    cfg.update(kw)
    return {k: v for k, v in cfg.items() if v is not None}


def _encode(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v)


async def _resolve(v: Any) -> tuple[Any, bool]:
    if isinstance(v, pulumi.Output):
        return await v.future(), bool(await v.is_secret())
    if isinstance(v, (list, tuple)):
        pairs = [await _resolve(x) for x in v]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    if isinstance(v, dict):
        items = {k: await _resolve(x) for k, x in v.items()}
        return {k: p[0] for k, p in items.items()}, any(p[1] for p in items.values())
    return v, False


def _ensure_event_loop() -> None:
    """Pulumi's mocks take the thread's current event loop. A test elsewhere in the session that used asyncio.run()
    leaves none behind (asyncio.run sets it to None), so make one when it is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loop = asyncio.get_event_loop()
        if loop.is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(
    cfg: dict[str, Any],
    secrets: dict[str, Any] | None = None,
    repo_root: Path | None = None,
    run: Run | None = None,
    via_main: bool = False,
) -> Run:
    """Run infra.program.main with this config (keys without the namespace); raises what the program raises.

    Pass ``run`` to see what was registered even when the program raises.
    """
    run = run if run is not None else Run()
    _ensure_event_loop()
    if (cfg.get("inference") or {}).get("mode") == "gpu":
        # A GPU host needs its model archive's pre-signed URL, a secret (infra/config.py); tests may pass their own.
        secrets = {"inferenceModelUrl": MODEL_URL, **(secrets or {})}
    secrets = {k: v for k, v in (secrets or {}).items() if v is not None}  # None: the test leaves the secret unset
    all_cfg = {f"{PROJECT}:{k}": _encode(v) for k, v in {**cfg, **(secrets or {})}.items()}
    pulumi.runtime.set_all_config(all_cfg, [f"{PROJECT}:{k}" for k in (secrets or {})])
    psettings.ROOT.set(None)
    pulumi.runtime.set_mocks(Recorder(run), project=PROJECT, stack="test", preview=False)

    original_init = pulumi.CustomResource.__init__

    def recording_init(self: Any, t: str, name: str, props: Any = None, opts: Any = None, *a: Any, **kw: Any) -> None:
        run.options[(t, name)] = opts or pulumi.ResourceOptions()
        original_init(self, t, name, props, opts, *a, **kw)

    pulumi.CustomResource.__init__ = recording_init  # type: ignore[method-assign]
    try:
        _run_main(run, repo_root, via_main)
    finally:
        pulumi.CustomResource.__init__ = original_init  # type: ignore[method-assign]
    return run


def _run_main(run: Run, repo_root: Path | None, via_main: bool) -> None:
    # The same loop pulumi's own @pulumi.runtime.test uses: the root stack's futures are bound to it.
    if via_main:
        # As the Pulumi CLI does: run the program directory's __main__.py as a script.
        saved = list(sys.path)
        try:
            _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program.REPO_ROOT / "infra"), run_name="__main__")))
        finally:
            sys.path[:] = saved
    else:
        _sync_await(run_pulumi_func(lambda: program.main(repo_root or program.REPO_ROOT)))
    stack = psettings.get_root_resource()
    for k, v in dict(getattr(stack, "outputs", {}) or {}).items():
        run.exports[k] = _sync_await(_resolve(v))


__all__ = [
    "BASE",
    "MODEL_URL",
    "SSH_KEY",
    "Recorder",
    "Res",
    "Run",
    "config_for",
    "is_secret",
    "pmocks",
    "run_program",
    "unwrap",
]


def ports_between(run: Run, cloud: str, *, to: str, src: str) -> set[int]:
    """The TCP ports the security groups open on hosts of role `to` for hosts of role `src` (first port of a range)."""
    if cloud == "aws":
        role = {g.id: g.props["tags"]["ai-assistant:role"] for g in run.of("aws:ec2/securityGroup:SecurityGroup")}
        return {
            r.props["fromPort"]
            for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
            if role[r.props["securityGroupId"]] == to
            and role.get(r.props.get("referencedSecurityGroupId") or "") == src
        }
    role = {g.id: g.props["tags"]["ai-assistant:role"] for g in run.of("alicloud:ecs/securityGroup:SecurityGroup")}
    return {
        int(r.props["portRange"].split("/")[0])
        for r in run.of("alicloud:ecs/securityGroupRule:SecurityGroupRule")
        if role[r.props["securityGroupId"]] == to and role.get(r.props.get("sourceSecurityGroupId") or "") == src
    }
