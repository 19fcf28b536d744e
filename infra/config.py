"""Typed stack configuration: every key the program reads, validated before any resource is declared.

Errors are one line naming the key (``ai-assistant:tier: ...``) and raised as ``pulumi.RunError`` so that
``pulumi preview`` prints the message without a Python traceback.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlparse

import pulumi

from infra.tiers import CLOUDS, TIERS, Cloud, TierName

NAMESPACE = "ai-assistant"
Color = Literal["blue", "green"]
# public: a load balancer takes HTTPS (webhooks, admin) on 443. none: egress-only, every connector reaches its platform
# outbound (docs/adr/0036-egress-only-ingress.md): no load balancer, nothing from outside the VPC on 443.
Ingress = Literal["public", "none"]
INGRESSES: tuple[Ingress, ...] = ("public", "none")
# Platforms with an outbound `mode: stream` (docs/connectors.md): Feishu/Lark long connection, Slack Socket Mode,
# Telegram long polling, DingTalk Stream. generic_im and WeCom's self-built apps have callbacks only.
STREAM_PLATFORMS = frozenset({"feishu", "lark", "slack", "telegram", "dingtalk"})
COLORS: tuple[Color, ...] = ("blue", "green")

# Names shared with the Ansible roles (tests/infra/test_cloudinit.py compares them with roles/*/defaults).
SERVICE_ACCOUNT = "ai-assistant"  # roles/base: base_service_accounts[0]
SERVICE_HOME = "/var/lib/ai-assistant"
ADMIN_USER = "ansible"  # the account Ansible logs in with (sudo); the base role keeps root logins key-only
DATA_MOUNT = "/data"  # roles/volumes: volumes_mount_point
DATA_LABEL = "aidata"  # roles/volumes: volumes_fs_label

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# AMI ids: ami- and 8 or 17 hex digits. Alibaba Cloud image ids: letters, digits, _ . - (debian_12_..._x64_...vhd).
_AMI = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
_ALI_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,127}$")
_ARM = re.compile(r"arm64|aarch64", re.IGNORECASE)
IMAGE_HELP = 'docs/infra.md, "Pinned OS image", has the look-up command'
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
DIGEST_HELP = 'docs/infra.md, "Pinned container images", has the look-up command'
_MODEL_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_KMS_INSTANCE = re.compile(r"^kst-[a-z0-9]{8,32}$")
_SSH_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( \S.*)?$")


class ConfigError(pulumi.RunError):
    """Bad stack configuration; the message is one line that starts with the key."""


@dataclass(frozen=True)
class GpuModel:
    """What the GPU host serves (roles/model_server, tgi): the TGI image by digest and the model archive staged from
    the bucket. The archive's pre-signed URL is the secret inferenceModelUrl, never a plain value."""

    image_digest: str  # sha256:<64 hex> of the role's TGI image
    model_dir: str  # the directory the archive is unpacked into; TGI loads /data/<it>
    model_sha256: str  # of the archive, checked before it is unpacked


@dataclass(frozen=True)
class Inference:
    mode: Literal["gpu", "external"]
    url: str | None = None  # external: the OpenAI-compatible or TGI endpoint
    gpu: GpuModel | None = None  # gpu: what the model server runs


@dataclass(frozen=True)
class AlertReceiver:
    name: str
    email: str | None = None
    webhook: str | None = None  # an https endpoint Alertmanager posts to directly (not through the assistant)


@dataclass(frozen=True)
class AlertSmtp:
    """The relay Alertmanager sends e-mail through; its password is the secret alertSmtpPassword."""

    smarthost: str
    sender: str
    username: str = ""
    require_tls: bool = True


@dataclass(frozen=True)
class AlertsTarget:
    """The connector and chat the assistant posts Alertmanager's alerts into."""

    connector: str
    chat_id: str


@dataclass(frozen=True)
class InfraConfig:
    cloud: Cloud
    tier: TierName
    region: str
    zones: tuple[str, str]  # (primary, same-city standby)
    domain: str
    backup_region: str
    inference: Inference
    ingress: Ingress = "public"
    admin_cidrs: tuple[str, ...] = ()
    im_source_cidrs: tuple[str, ...] = ()
    active_color: Color = "blue"
    deploy_colors: tuple[Color, ...] = ("blue",)
    standby_weight: int = 20
    canary_weight: int = 0
    # A planned move (docs/runbooks/zone-failover.md): the primary zone's hosts leave the load balancer's groups and
    # the standby zone serves everything. Losing the zone needs no switch: the groups route by health.
    failover: bool = False
    backup_retention_days: int = 30
    alert_receivers: tuple[AlertReceiver, ...] = ()
    handoff: bool = True
    autoscaling: bool = False
    # Alibaba Cloud with autoscaling: the KMS instance (KMS 3.0) that holds the on-boot secret and its key; unset, the
    # secret goes to the account's KMS without an instance (accounts that still have it). docs/adr/0039.
    kms_instance_id: str | None = None
    ssh_public_key: str | None = None
    certificate_id: str | None = None
    dns_zone: str | None = None
    # The pinned OS image (Debian 12, x86_64) of the region. Never looked up at plan time: a "most recent" lookup
    # would plan a replacement of every host whenever the distribution publishes a new image.
    image_id: str = ""
    vpc_cidr: str = "10.40.0.0/16"
    # The hand-off's inputs (issue 17): connectors without their secrets, where alerts go, the fallback paths.
    connectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alerts: AlertsTarget | None = None
    alert_smtp: AlertSmtp | None = None
    watchdog_url: str | None = None
    alert_smtp_password: pulumi.Output[str] | None = field(default=None, compare=False)
    # Secrets the operator sets with `pulumi config set --secret`; never read as plain values.
    im_secrets: pulumi.Output[Any] | None = field(default=None, compare=False)
    inference_api_key: pulumi.Output[str] | None = field(default=None, compare=False)
    # PEM of the CA that signs the managed Redis' TLS certificate, for hosts whose trust store lacks it: ApsaraDB for
    # Redis signs with Alibaba Cloud's own CA (console: the instance's SSL settings, "Download CA certificate").
    # ElastiCache's certificates chain to a public root, so AWS needs none. Public: handed over as a plain variable.
    redis_ca_cert: str | None = None
    # sha256:<64 hex> of roles/weaviate's image: the knowledge base runs by digest only (stack key weaviateImageDigest).
    weaviate_image_digest: str = ""
    # gpu: the pre-signed URL of the model archive in the bucket (a credential until it expires).
    inference_model_url: pulumi.Output[str] | None = field(default=None, compare=False)

    @property
    def standby_color(self) -> Color:
        return "green" if self.active_color == "blue" else "blue"


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{_key(name)}: unknown value {value!r} (expected one of {', '.join(allowed)})")
    return value


def _cidr(name: str, value: object, *, allow_world: bool) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{_key(name)}: {value!r} is not a CIDR string like 203.0.113.0/24")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ConfigError(f"{_key(name)}: {value!r} is not a valid CIDR ({e})") from None
    if net.prefixlen == 0 and not allow_world:
        raise ConfigError(f"{_key(name)}: {value!r} opens the port to the whole internet; list your admin networks")
    return str(net)


def _cidr_list(cfg: pulumi.Config, name: str, *, allow_world: bool) -> tuple[str, ...]:
    raw = _object(cfg, name, [])
    if not isinstance(raw, list):
        raise ConfigError(f"{_key(name)}: expected a list of CIDRs, got {type(raw).__name__}")
    return tuple(_cidr(name, v, allow_world=allow_world) for v in raw)


def _object(cfg: pulumi.Config, name: str, default: Any) -> Any:
    try:
        value = cfg.get_object(name)
    except Exception as e:  # pulumi raises its own JSON/type errors without naming the key
        raise ConfigError(f"{_key(name)}: not valid JSON/YAML ({e})") from None
    return default if value is None else value


def _int(cfg: pulumi.Config, name: str, default: int, lo: int, hi: int) -> int:
    raw = cfg.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{_key(name)}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{_key(name)}: {value} is out of range ({lo}..{hi})")
    return value


def _bool(cfg: pulumi.Config, name: str, default: bool) -> bool:
    raw = cfg.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ConfigError(f"{_key(name)}: {raw!r} is not true or false")


def _require(cfg: pulumi.Config, name: str) -> str:
    value = cfg.get(name)
    if not value:
        raise ConfigError(f"{_key(name)}: required (pulumi config set {name} ...)")
    return value


def _zones(cfg: pulumi.Config, region: str) -> tuple[str, str]:
    raw = _object(cfg, "zones", None)
    if raw is None:
        raise ConfigError(f"{_key('zones')}: required, a list of two zones of {region} (primary first)")
    if not isinstance(raw, list) or not all(isinstance(z, str) for z in raw):
        raise ConfigError(f"{_key('zones')}: expected a list of two zone names, got {raw!r}")
    if len(raw) != 2 or raw[0] == raw[1]:
        raise ConfigError(f"{_key('zones')}: exactly two distinct zones are required, got {raw!r}")
    for z in raw:
        if not z.startswith(region):
            raise ConfigError(f"{_key('zones')}: zone {z!r} is not in region {region!r}")
    return (raw[0], raw[1])


def _inference(cfg: pulumi.Config) -> Inference:
    raw = _object(cfg, "inference", None)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{_key('inference')}: required, {{mode: gpu}} or {{mode: external, url: https://...}}")
    mode = _choice("inference.mode", raw.get("mode"), ("gpu", "external"))
    url = raw.get("url")
    if mode == "external":
        parsed = urlparse(str(url or ""))
        if parsed.scheme != "https" or not parsed.hostname:
            raise ConfigError(f"{_key('inference.url')}: an https:// URL is required for external inference")
        if parsed.username or parsed.password:
            raise ConfigError(f"{_key('inference.url')}: put credentials in the secret inferenceApiKey, not the URL")
        for gpu_only in ("imageDigest", "model"):
            if gpu_only in raw:
                raise ConfigError(f"{_key('inference.' + gpu_only)}: only used with mode gpu")
        return Inference("external", str(url))
    if url is not None:
        raise ConfigError(f"{_key('inference.url')}: only used with mode external")
    digest = _digest("inference.imageDigest", raw.get("imageDigest"))
    model = raw.get("model")
    if not isinstance(model, Mapping):
        raise ConfigError(
            f"{_key('inference.model')}: required with mode gpu, {{dir: <name>, sha256: <of the archive>}}"
        )
    model_dir = str(model.get("dir") or "")
    if not _MODEL_DIR.match(model_dir):
        raise ConfigError(
            f"{_key('inference.model.dir')}: {model_dir!r} is not one directory name (letters, digits, . _ -)"
        )
    sha = str(model.get("sha256") or "")
    if not re.match(r"^[0-9a-f]{64}$", sha):
        raise ConfigError(f"{_key('inference.model.sha256')}: {sha!r} is not the archive's SHA-256 (64 hex digits)")
    return Inference("gpu", gpu=GpuModel(digest, model_dir, sha))


def _digest(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not _DIGEST.match(raw):
        raise ConfigError(f"{_key(name)}: required, the image's digest sha256:<64 hex digits> ({DIGEST_HELP})")
    return raw


def _image(cfg: pulumi.Config, cloud: Cloud) -> str:
    raw = (cfg.get("imageId") or "").strip()
    if not raw:
        raise ConfigError(f"{_key('imageId')}: required: pin the Debian 12 x86_64 image of your region ({IMAGE_HELP})")
    if cloud == "aws" and not _AMI.match(raw):
        raise ConfigError(f"{_key('imageId')}: {raw!r} is not an AMI id like ami-0123456789abcdef0 ({IMAGE_HELP})")
    if cloud == "alicloud" and not _ALI_IMAGE.match(raw):
        raise ConfigError(
            f"{_key('imageId')}: {raw!r} is not an ECS image id like debian_12_..._x64_20G_alibase_...vhd"
        )
    if _ARM.search(raw):
        # Every instance type in infra/tiers.py is x86_64; an Arm image would not boot on them.
        raise ConfigError(f"{_key('imageId')}: {raw!r} is an Arm image; the tiers use x86_64 instance types")
    return raw


def _receivers(cfg: pulumi.Config) -> tuple[AlertReceiver, ...]:
    raw = _object(cfg, "alertReceivers", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{_key('alertReceivers')}: expected a list of {{name, email}}")
    out = []
    for i, r in enumerate(raw):
        key = _key(f"alertReceivers[{i}]")
        if not isinstance(r, Mapping) or not r.get("name") or not (r.get("email") or r.get("webhook")):
            raise ConfigError(f"{key}: needs a name and a valid email or webhook, got {r!r}")
        email, webhook = r.get("email"), r.get("webhook")
        if email is not None and not _EMAIL.match(str(email)):
            raise ConfigError(f"{key}: needs a name and a valid email, got {r!r}")
        if webhook is not None:
            _https_url(f"alertReceivers[{i}].webhook", webhook)
        out.append(AlertReceiver(str(r["name"]), str(email) if email else None, str(webhook) if webhook else None))
    return tuple(out)


def load(cfg: pulumi.Config | None = None) -> InfraConfig:
    """Read and validate the stack's configuration; raises ConfigError with a one-line message."""
    cfg = cfg or pulumi.Config(NAMESPACE)
    cloud = cast(Cloud, _choice("cloud", cfg.get("cloud"), CLOUDS))
    tier = cast(TierName, _choice("tier", cfg.get("tier"), TIERS))
    region = _require(cfg, "region")
    zones = _zones(cfg, region)
    domain = _require(cfg, "domain").lower()
    if not _HOSTNAME.match(domain):
        raise ConfigError(f"{_key('domain')}: {domain!r} is not a DNS name like assistant.example.com")
    backup_region = _require(cfg, "backupRegion")
    if backup_region == region:
        raise ConfigError(f"{_key('backupRegion')}: must differ from region {region!r} (off-site daily backups)")

    active = cast(Color, _choice("activeColor", cfg.get("activeColor") or "blue", COLORS))
    colors_raw = _object(cfg, "deployColors", [active])
    if not isinstance(colors_raw, list) or not colors_raw:
        raise ConfigError(f"{_key('deployColors')}: expected a non-empty list of blue/green")
    colors = tuple(cast(Color, _choice("deployColors", c, COLORS)) for c in dict.fromkeys(colors_raw))
    if active not in colors:
        raise ConfigError(f"{_key('activeColor')}: {active} has no instances; add it to deployColors first")
    canary = _int(cfg, "canaryWeight", 0, 0, 100)
    if canary and len(colors) < 2:
        raise ConfigError(f"{_key('canaryWeight')}: needs both colours in deployColors")

    admin_cidrs = _cidr_list(cfg, "adminCidrs", allow_world=False)
    ssh_key = cfg.get("sshPublicKey")
    if ssh_key is not None and not _SSH_KEY.match(ssh_key.strip()):
        raise ConfigError(f"{_key('sshPublicKey')}: not an OpenSSH public key (ssh-ed25519 AAAA...)")
    if admin_cidrs and not ssh_key:
        raise ConfigError(f"{_key('sshPublicKey')}: required when adminCidrs allows SSH")
    handoff = _bool(cfg, "handoff", True)
    if handoff and not admin_cidrs:
        raise ConfigError(f"{_key('handoff')}: Ansible needs SSH; set adminCidrs or handoff: false")

    autoscaling = _bool(cfg, "autoscaling", False)
    kms_instance_id = cfg.get("kmsInstanceId")
    if kms_instance_id is not None and not (cloud == "alicloud" and autoscaling):
        raise ConfigError(f"{_key('kmsInstanceId')}: only used on alicloud with autoscaling: true (the on-boot secret)")
    if kms_instance_id is not None and not _KMS_INSTANCE.match(kms_instance_id):
        raise ConfigError(f"{_key('kmsInstanceId')}: {kms_instance_id!r} is not a KMS instance id like kst-hzz65f1...")

    ingress = cast(Ingress, _choice("ingress", cfg.get("ingress") or "public", INGRESSES))
    im_source_cidrs = _cidr_list(cfg, "imSourceCidrs", allow_world=False)
    if ingress == "none" and im_source_cidrs:
        raise ConfigError(f"{_key('imSourceCidrs')}: only used with ingress public (nothing reaches ingress none)")
    certificate_id = cfg.get("certificateId")
    dns_zone = cfg.get("dnsZone")
    if ingress == "public" and not certificate_id and not (cloud == "aws" and dns_zone):
        need = "certificateId (ACM ARN) or dnsZone" if cloud == "aws" else "certificateId (SSL Certificates Service id)"
        raise ConfigError(f"{_key('certificateId')}: required: {need}")

    inference = _inference(cfg)
    model_url = cfg.get_secret("inferenceModelUrl")
    if inference.mode == "gpu" and model_url is None:
        raise ConfigError(
            f"{_key('inferenceModelUrl')}: required with mode gpu (--secret): the pre-signed URL of the model archive"
        )
    if inference.mode != "gpu" and model_url is not None:
        raise ConfigError(f"{_key('inferenceModelUrl')}: only used with inference mode gpu")

    return InfraConfig(
        cloud=cloud,
        tier=tier,
        region=region,
        zones=zones,
        domain=domain,
        backup_region=backup_region,
        inference=inference,
        inference_model_url=model_url,
        weaviate_image_digest=_digest("weaviateImageDigest", cfg.get("weaviateImageDigest")),
        ingress=ingress,
        admin_cidrs=admin_cidrs,
        im_source_cidrs=im_source_cidrs,
        active_color=active,
        deploy_colors=colors,
        standby_weight=_standby_weight(cfg, cloud),
        canary_weight=canary,
        failover=_bool(cfg, "failover", False),
        backup_retention_days=_int(cfg, "backupRetentionDays", 30, 1, 3650),
        alert_receivers=_receivers(cfg),
        handoff=handoff,
        autoscaling=autoscaling,
        kms_instance_id=kms_instance_id,
        ssh_public_key=ssh_key.strip() if ssh_key else None,
        certificate_id=certificate_id,
        dns_zone=dns_zone,
        image_id=_image(cfg, cloud),
        vpc_cidr=_cidr("vpcCidr", cfg.get("vpcCidr") or "10.40.0.0/16", allow_world=False),
        redis_ca_cert=_pem_certificate("redisCaCert", cfg.get("redisCaCert")),
        im_secrets=cfg.get_secret_object("imSecrets"),
        inference_api_key=cfg.get_secret("inferenceApiKey"),
        **_handoff_inputs(cfg, ingress),
    )


def _standby_weight(cfg: pulumi.Config, cloud: Cloud) -> int:
    if cloud == "aws":
        if cfg.get("standbyWeight") is not None:
            raise ConfigError(
                f"{_key('standbyWeight')}: not used on AWS: a target group cannot weigh its targets, so each zone "
                f"serves its hosts' share ({FAILOVER_ADR}); pulumi config rm standbyWeight"
            )
        return 50
    weight = _int(cfg, "standbyWeight", 20, 0, 50)
    if weight == 0:
        # Alibaba Cloud's ALB neither health-checks nor uses a server of weight 0: no standby to fail over to.
        raise ConfigError(
            f"{_key('standbyWeight')}: 0 leaves the standby zone's servers unchecked and unused, so nothing takes "
            "over when the primary zone fails; use 1..50 (failover: true moves all traffic on purpose)"
        )
    return weight


_PEM_CERT = re.compile(r"^(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?)+$")


def _pem_certificate(name: str, raw: str | None) -> str | None:
    if not raw:
        return None
    text = raw.replace("\r\n", "\n").strip() + "\n"
    if "PRIVATE KEY" in text:
        raise ConfigError(f"{_key(name)}: holds a private key; only the CA's certificate belongs here")
    if not _PEM_CERT.match(text):
        raise ConfigError(
            f"{_key(name)}: not PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"
        )
    return text


FAILOVER_ADR = "docs/adr/0038-zone-failover-by-health.md"


def color_weights(conf: InfraConfig) -> dict[Color, int]:
    """Weight of each colour's target group / server group in the listener (AWS) or the weighted rule (Alibaba
    Cloud), out of 100: the active colour 100 - canaryWeight, the other canaryWeight, a colour without hosts 0."""
    out: dict[Color, int] = {}
    for color in COLORS:
        share = 100 - conf.canary_weight if color == conf.active_color else conf.canary_weight
        out[color] = share if color in conf.deploy_colors else 0
    return out


def zone_weights(conf: InfraConfig) -> tuple[int, int]:
    """Each zone's part of a colour's traffic while both zones have healthy hosts, out of 100.

    One group per colour holds the hosts of both zones, and the load balancer sends only to the healthy ones
    (docs/adr/0038-zone-failover-by-health.md): when the primary zone has no healthy host, the standby zone takes
    all of it by itself. Alibaba Cloud weighs every server, so its hosts carry 100 - standbyWeight and standbyWeight;
    an AWS target group cannot weigh its targets, so each zone gets its hosts' share (the tiers put as many in each
    zone: even). failover: true takes the primary zone out of the groups on purpose (a planned move).
    """
    if conf.failover:
        return (0, 100)
    if conf.cloud == "aws":
        return (50, 50)
    return (100 - conf.standby_weight, conf.standby_weight)


def traffic_weights(conf: InfraConfig) -> dict[tuple[Color, int], int]:
    """The share of all requests each (colour, zone) serves while every host is healthy, out of 100 (exported as
    trafficWeights): the colour's weight split by the zones' weights."""
    zones = zone_weights(conf)
    return {
        (color, zi): share * zs // 100 for color, share in color_weights(conf).items() for zi, zs in enumerate(zones)
    }


# --- the hand-off's inputs (issue 17): connectors, the alerts chat, SMTP and the dead man's switch ---------------

_CONNECTOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Option names that hold credentials on some platform: they belong in the secret imSecrets, never in plain config.
SECRET_OPTION_NAMES = frozenset(
    {"app_secret", "secret", "token", "bot_token", "encrypt_key", "aes_key", "signing_secret", "verification_token"}
)


def _https_url(name: str, value: object) -> str:
    parsed = urlparse(str(value))
    if parsed.scheme != "https" or not parsed.hostname:
        raise ConfigError(f"{_key(name)}: {value!r} is not an https:// URL")
    return str(value)


def _connectors(cfg: pulumi.Config) -> dict[str, dict[str, Any]]:
    raw = _object(cfg, "connectors", {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{_key('connectors')}: expected name -> options (connectors.yaml's shape, no secrets)")
    out: dict[str, dict[str, Any]] = {}
    for name, options in raw.items():
        if not _CONNECTOR_NAME.match(str(name)):
            raise ConfigError(f"{_key(f'connectors.{name}')}: names are lower-case letters, digits, - and _")
        if not isinstance(options, Mapping) or not isinstance(options.get("platform"), str):
            raise ConfigError(f"{_key(f'connectors.{name}.platform')}: required (e.g. generic_im, feishu, slack)")
        leaked = sorted(SECRET_OPTION_NAMES.intersection(options))
        if leaked:
            raise ConfigError(
                f"{_key(f'connectors.{name}.{leaked[0]}')}: a secret; set it in imSecrets "
                f"(pulumi config set --secret --path 'imSecrets.{name}.{leaked[0]}' ...)"
            )
        out[str(name)] = dict(options)
    return out


def _egress_only_connectors(connectors: Mapping[str, Mapping[str, Any]]) -> None:
    """ingress none: a webhook-mode connector would wait for callbacks that nothing can deliver."""
    for name, options in connectors.items():
        platform, mode = options["platform"], options.get("mode", "webhook")
        if platform not in STREAM_PLATFORMS:
            raise ConfigError(
                f"{_key(f'connectors.{name}.platform')}: {platform} has no stream mode, so it needs ingress public "
                f"(stream mode: {', '.join(sorted(STREAM_PLATFORMS))})"
            )
        if mode != "stream":
            raise ConfigError(
                f"{_key(f'connectors.{name}.mode')}: {mode!r} with ingress none; an egress-only stack needs every "
                "connector in mode stream"
            )


def _handoff_inputs(cfg: pulumi.Config, ingress: Ingress) -> dict[str, Any]:
    connectors = _connectors(cfg)
    if ingress == "none":
        _egress_only_connectors(connectors)
    alerts_raw = _object(cfg, "alerts", None)
    alerts = None
    if alerts_raw is not None:
        if not isinstance(alerts_raw, Mapping) or not alerts_raw.get("connector") or not alerts_raw.get("chatId"):
            raise ConfigError(f"{_key('alerts')}: expected {{connector: <name in connectors>, chatId: <chat>}}")
        if alerts_raw["connector"] not in connectors:
            raise ConfigError(f"{_key('alerts.connector')}: {alerts_raw['connector']!r} is not in connectors")
        alerts = AlertsTarget(str(alerts_raw["connector"]), str(alerts_raw["chatId"]))
    smtp_raw = _object(cfg, "alertSmtp", None)
    smtp = None
    if smtp_raw is not None:
        host = str(smtp_raw.get("smarthost", "")) if isinstance(smtp_raw, Mapping) else ""
        if not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", host):
            raise ConfigError(f"{_key('alertSmtp.smarthost')}: expected host:port of the SMTP relay, got {host!r}")
        sender = str(smtp_raw.get("from", ""))
        if not _EMAIL.match(sender):
            raise ConfigError(f"{_key('alertSmtp.from')}: {sender!r} is not an e-mail address")
        require_tls = smtp_raw.get("requireTls", True)
        if not isinstance(require_tls, bool):
            raise ConfigError(f"{_key('alertSmtp.requireTls')}: {require_tls!r} is not true or false")
        smtp = AlertSmtp(host, sender, str(smtp_raw.get("username") or ""), require_tls)
        if smtp.username and cfg.get_secret("alertSmtpPassword") is None:
            raise ConfigError(f"{_key('alertSmtpPassword')}: required with alertSmtp.username (--secret)")
    if smtp is None and any(r.email for r in _receivers(cfg)):
        raise ConfigError(f"{_key('alertSmtp')}: required when alertReceivers has an e-mail ({{smarthost, from}})")
    watchdog = cfg.get("watchdogUrl")
    return {
        "connectors": connectors,
        "alerts": alerts,
        "alert_smtp": smtp,
        "watchdog_url": _https_url("watchdogUrl", watchdog) if watchdog else None,
        "alert_smtp_password": cfg.get_secret("alertSmtpPassword"),
    }
