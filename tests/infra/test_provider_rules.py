"""Provider rules: every name, tag and argument the program generates, held to the clouds' documented constraints.

Pulumi's mocks accept anything; AWS and Alibaba Cloud do not. Each rule below names the constraint's source (the
provider's API reference) so that a failing rule reads like the refusal `pulumi up` would have printed, and so that a
reader can check the rule against the page. Every rule also carries a broken example it must reject (the rule can
fail), and every resource type the program registers must be covered by a rule or listed in UNCONSTRAINED with the
reason (a new resource type cannot slip past).

Physical names: where the program leaves a name to Pulumi, the provider creates `<logical name>-<7 random chars>`
(auto-naming); with a `namePrefix`, Terraform-based providers append 26 characters. Rules check those names.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.infra.conftest import CASES
from tests.infra.harness import Res, Run, config_for, run_program

Get = Callable[[str, str], Run]
Check = Callable[[Res, Run | None], Iterable[str]]

AUTONAME_TAIL = "-a1b2c3d"  # Pulumi auto-naming: "-" and seven random characters
PREFIX_TAIL = "0" * 26  # name_prefix: the provider appends a 26-character unique id


@dataclass(frozen=True)
class Rule:
    types: tuple[str, ...]
    what: str
    source: str
    check: Check
    # A resource the rule must reject: (type, logical name, inputs).
    bad: tuple[str, str, dict[str, Any]] = ("", "", {})
    extra: dict[str, Any] = field(default_factory=dict)


def physical(r: Res, key: str = "name", prefix_key: str | None = "namePrefix") -> str:
    """The name the provider will create: explicit, prefix plus unique id, or the auto-name."""
    p = r.props
    if p.get(key):
        return str(p[key])
    if prefix_key and p.get(prefix_key):
        return str(p[prefix_key]) + PREFIX_TAIL
    return r.name + AUTONAME_TAIL


def _length(value: str, lo: int, hi: int, what: str) -> list[str]:
    return [] if lo <= len(value) <= hi else [f"{what} {value!r} is {len(value)} characters, allowed {lo}..{hi}"]


def _pattern(value: str, regex: str, what: str) -> list[str]:
    return [] if re.fullmatch(regex, value) else [f"{what} {value!r} does not match {regex}"]


def _range(value: Any, lo: int, hi: int, what: str) -> list[str]:
    if value is None:
        return []
    try:
        n = int(value)
    except (TypeError, ValueError):
        return [f"{what} {value!r} is not a number"]
    return [] if lo <= n <= hi else [f"{what} {n} is outside {lo}..{hi}"]


def _num(v: Any) -> bool:
    # Numbers cross the mock boundary as floats; what counts is that a whole number was given.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()


def _no_url_start(value: str, what: str) -> list[str]:
    return [f"{what} {value!r} starts with http:// or https://"] if value.startswith(("http://", "https://")) else []


# ---------------------------------------------------------------------------------------------------------- AWS
AWS_SG_CHARS = r"[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]+"
AWS_TAGGED = (
    "aws:ec2/vpc:Vpc",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/routeTable:RouteTable",
    "aws:ec2/eip:Eip",
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:ec2/instance:Instance",
    "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:ec2/keyPair:KeyPair",
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:lb/targetGroup:TargetGroup",
    "aws:lb/listener:Listener",
    "aws:s3/bucket:Bucket",
    "aws:iam/role:Role",
    "aws:iam/instanceProfile:InstanceProfile",
    "aws:acm/certificate:Certificate",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:elasticache/subnetGroup:SubnetGroup",
    "aws:ebs/volume:Volume",
    "aws:sns/topic:Topic",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
)
AWS_TAG_KEY = r"[\w\s+\-=.:/@]{1,128}"
AWS_TAG_VALUE = r"[\w\s+\-=.:/@]{0,256}"


def _aws_default_tags(run: Run | None) -> dict[str, str]:
    if run is None:
        return {}
    providers = run.of("pulumi:providers:aws")
    if not providers:
        return {}
    raw = providers[0].props.get("defaultTags") or {}
    # Provider inputs reach the engine as JSON strings.
    return dict((json.loads(raw) if isinstance(raw, str) else raw).get("tags") or {})


def _aws_tags(r: Res, run: Run | None) -> Iterable[str]:
    tags = {**_aws_default_tags(run), **(r.props.get("tags") or {})}
    if len(tags) > 50:
        yield f"{len(tags)} tags, at most 50"
    for k, v in tags.items():
        yield from _pattern(str(k), AWS_TAG_KEY, "tag key")
        yield from _pattern(str(v), AWS_TAG_VALUE, f"tag {k} value")
        if str(k).lower().startswith("aws:"):
            yield f"tag key {k!r} uses the reserved aws: prefix"


def _aws_sg_name(r: Res, _: Run | None) -> Iterable[str]:
    name = physical(r)
    yield from _length(name, 1, 255, "security group name")
    yield from _pattern(name, AWS_SG_CHARS, "security group name")
    if name.lower().startswith("sg-"):
        yield f"security group name {name!r} starts with sg-"
    desc = str(r.props.get("description", "Managed by Pulumi"))
    yield from _length(desc, 1, 255, "security group description")
    yield from _pattern(desc, AWS_SG_CHARS, "security group description")


def _aws_sg_rule(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    proto = str(p.get("ipProtocol"))
    if proto in ("tcp", "udp", "6", "17"):
        if p.get("fromPort") is None or p.get("toPort") is None:
            yield f"{proto} rule without fromPort/toPort"
        else:
            yield from _range(p["fromPort"], 0, 65535, "fromPort")
            yield from _range(p["toPort"], 0, 65535, "toPort")
            if int(p["fromPort"]) > int(p["toPort"]):
                yield f"fromPort {p['fromPort']} > toPort {p['toPort']}"
    elif proto == "-1":
        if p.get("fromPort") is not None or p.get("toPort") is not None:
            yield "ipProtocol -1 (all) takes no ports"
    elif proto not in ("icmp", "icmpv6", "1", "58"):
        yield f"ipProtocol {proto!r} is not tcp, udp, icmp, icmpv6 or -1"
    targets = [k for k in ("cidrIpv4", "cidrIpv6", "prefixListId", "referencedSecurityGroupId") if p.get(k)]
    if len(targets) != 1:
        yield f"exactly one of cidrIpv4, cidrIpv6, prefixListId, referencedSecurityGroupId is required, got {targets}"
    if p.get("description") is not None:
        yield from _length(str(p["description"]), 0, 255, "rule description")
        yield from _pattern(str(p["description"]), AWS_SG_CHARS + "|", "rule description")


def _aws_elb_name(r: Res, _: Run | None) -> Iterable[str]:
    name = physical(r)
    yield from _length(name, 1, 32, "name")
    yield from _pattern(name, r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", "name")
    if name.lower().startswith("internal-"):
        yield f"name {name!r} starts with internal-"


def _aws_alb(r: Res, _: Run | None) -> Iterable[str]:
    yield from _range(r.props.get("idleTimeout"), 1, 4000, "idleTimeout")
    if len(r.props.get("subnets") or []) < 2:
        yield "an Application Load Balancer needs subnets in at least two Availability Zones"


def _aws_target_group(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _range(p.get("port"), 1, 65535, "port")
    yield from _range(p.get("deregistrationDelay"), 0, 3600, "deregistrationDelay")
    hc = p.get("healthCheck") or {}
    yield from _range(hc.get("interval"), 5, 300, "healthCheck.interval")
    yield from _range(hc.get("timeout"), 2, 120, "healthCheck.timeout")
    yield from _range(hc.get("healthyThreshold"), 2, 10, "healthCheck.healthyThreshold")
    yield from _range(hc.get("unhealthyThreshold"), 2, 10, "healthCheck.unhealthyThreshold")
    if hc.get("timeout") is not None and hc.get("interval") is not None and hc["timeout"] >= hc["interval"]:
        yield "healthCheck.timeout must be smaller than healthCheck.interval"
    path = str(hc.get("path", "/"))
    if not path.startswith("/"):
        yield f"healthCheck.path {path!r} does not start with /"
    yield from _length(path, 1, 1024, "healthCheck.path")
    for code in re.split(r"[,-]", str(hc.get("matcher", "200"))):
        yield from _range(code, 200, 499, "healthCheck.matcher code")
    cross_zone = p.get("loadBalancingCrossZoneEnabled", "use_load_balancer_configuration")
    if cross_zone not in ("true", "false", "use_load_balancer_configuration"):
        yield f"loadBalancingCrossZoneEnabled {cross_zone!r} is not true, false or use_load_balancer_configuration"


def _aws_listener(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _range(p.get("port"), 1, 65535, "port")
    if p.get("protocol") == "HTTPS" and not p.get("certificateArn"):
        yield "an HTTPS listener needs certificateArn"
    for action in p.get("defaultActions") or []:
        groups = ((action.get("forward") or {}).get("targetGroups")) or []
        if action.get("type") == "forward" and action.get("forward") is not None and not 1 <= len(groups) <= 5:
            yield f"forward to {len(groups)} target groups, allowed 1..5"
        for g in groups:
            yield from _range(g.get("weight"), 0, 999, "target group weight")


S3_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


def _s3_bucket(r: Res, _: Run | None) -> Iterable[str]:
    name = physical(r, "bucket", "bucketPrefix")
    yield from _pattern(name, S3_NAME, "bucket name")
    if ".." in name or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        yield f"bucket name {name!r} has adjacent periods or is an IP address"
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(("-s3alias", "--ol-s3", "--x-s3")):
        yield f"bucket name {name!r} uses a reserved prefix or suffix"


def _s3_lifecycle(r: Res, _: Run | None) -> Iterable[str]:
    for rule in r.props.get("rules") or []:
        yield from _length(str(rule.get("id", "")), 1, 255, "rule id")
        yield from _range((rule.get("expiration") or {}).get("days"), 1, 2**31 - 1, "expiration.days")
        nc = rule.get("noncurrentVersionExpiration") or {}
        yield from _range(nc.get("noncurrentDays"), 1, 2**31 - 1, "noncurrentDays")


def _user_data_size(raw: str | None, limit: int, what: str) -> list[str]:
    n = len((raw or "").encode())
    return [] if n <= limit else [f"{what} is {n} bytes before base64, at most {limit}"]


def _aws_volume_sizes(devices: Iterable[dict[str, Any]], size_key: str = "volumeSize") -> Iterable[str]:
    for d in devices:
        if d.get("volumeType", "gp3") in ("gp2", "gp3"):
            yield from _range(d.get(size_key), 1, 16384, f"{d.get('volumeType', 'gp3')} volume size (GiB)")


def _aws_instance(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _user_data_size(p.get("userData"), 16384, "userData")
    yield from _aws_volume_sizes([p.get("rootBlockDevice") or {}, *(p.get("ebsBlockDevices") or [])])
    yield from _range((p.get("metadataOptions") or {}).get("httpPutResponseHopLimit"), 1, 64, "hop limit")


def _aws_launch_template(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    name = physical(r)
    yield from _length(name, 3, 128, "launch template name")
    yield from _pattern(name, r"[a-zA-Z0-9().\-/_]+", "launch template name")
    raw = base64.b64decode(p["userData"]).decode() if p.get("userData") else ""
    yield from _user_data_size(raw, 16384, "userData")
    yield from _aws_volume_sizes([m.get("ebs") or {} for m in p.get("blockDeviceMappings") or []])
    yield from _range((p.get("metadataOptions") or {}).get("httpPutResponseHopLimit"), 1, 64, "hop limit")


def _aws_asg(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _length(physical(r), 1, 255, "group name")
    lo, want, hi = p.get("minSize"), p.get("desiredCapacity", p.get("minSize")), p.get("maxSize")
    if not (_num(lo) and _num(want) and _num(hi) and 0 <= lo <= want <= hi):
        yield f"needs 0 <= minSize <= desiredCapacity <= maxSize, got {lo}, {want}, {hi}"
    if p.get("healthCheckType", "EC2") not in ("EC2", "ELB", "VPC_LATTICE", "EBS"):
        yield f"healthCheckType {p.get('healthCheckType')!r}"
    tags = p.get("tags") or []
    if len(tags) > 50:
        yield f"{len(tags)} tags, at most 50"
    for t in tags:
        yield from _pattern(str(t.get("key")), AWS_TAG_KEY, "tag key")
        yield from _length(str(t.get("value", "")), 0, 256, "tag value")


def _aws_scaling_policy(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _length(physical(r), 1, 255, "policy name")
    if p.get("policyType") == "TargetTrackingScaling":
        cfg = p.get("targetTrackingConfiguration") or {}
        if not cfg.get("targetValue") or float(cfg["targetValue"]) <= 0:
            yield "target tracking needs a positive targetValue"
        metric = (cfg.get("predefinedMetricSpecification") or {}).get("predefinedMetricType")
        allowed = (
            "ASGAverageCPUUtilization",
            "ASGAverageNetworkIn",
            "ASGAverageNetworkOut",
            "ALBRequestCountPerTarget",
        )
        if metric not in allowed:
            yield f"predefinedMetricType {metric!r} not in {allowed}"
        if metric == "ALBRequestCountPerTarget" and not (cfg.get("predefinedMetricSpecification") or {}).get(
            "resourceLabel"
        ):
            yield "ALBRequestCountPerTarget needs a resourceLabel"


def _aws_iam_name(limit: int) -> Check:
    def check(r: Res, _: Run | None) -> Iterable[str]:
        name = physical(r)
        yield from _length(name, 1, limit, "IAM name")
        yield from _pattern(name, r"[\w+=,.@-]+", "IAM name")

    return check


def _aws_key_pair(r: Res, _: Run | None) -> Iterable[str]:
    name = physical(r, "keyName", "keyNamePrefix")
    yield from _length(name, 1, 255, "key pair name")
    if not name.isascii():
        yield f"key pair name {name!r} is not ASCII"


def _aws_record(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _range(p.get("ttl"), 0, 2**31 - 1, "ttl")
    if str(p.get("type")) not in (
        "A",
        "AAAA",
        "CAA",
        "CNAME",
        "DS",
        "MX",
        "NAPTR",
        "NS",
        "PTR",
        "SOA",
        "SPF",
        "SRV",
        "TXT",
    ):
        yield f"record type {p.get('type')!r}"
    if p.get("aliases") and p.get("ttl") is not None:
        yield "an alias record takes no ttl"


def _aws_cache_group(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    name = physical(r, "replicationGroupId", None)
    yield from _pattern(name, r"[a-z][a-z0-9-]{0,39}", "replication group id")
    if "--" in name or name.endswith("-"):
        yield f"replication group id {name!r} has two consecutive hyphens or ends with one"
    yield from _length(str(p.get("description", "")), 1, 255, "description")
    if p.get("authToken") is not None:
        token = str(p["authToken"])
        if not p.get("transitEncryptionEnabled"):
            yield "authToken requires transitEncryptionEnabled"
        yield from _length(token, 16, 128, "authToken")
        if re.search(r'[/"@\s]', token):
            yield 'authToken contains /, ", @ or a space'
    if p.get("automaticFailoverEnabled") and int(p.get("numCacheClusters", 1)) < 2:
        yield "automatic failover needs numCacheClusters >= 2"
    if p.get("multiAzEnabled") and not p.get("automaticFailoverEnabled"):
        yield "multiAzEnabled requires automaticFailoverEnabled"


def _aws_cache_subnets(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(physical(r), r"[a-z0-9-]{1,255}", "cache subnet group name")


def _aws_volume(r: Res, _: Run | None) -> Iterable[str]:
    yield from _aws_volume_sizes([{"volumeType": r.props.get("type", "gp3"), "volumeSize": r.props.get("size")}])


def _sns_topic(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(physical(r, prefix_key="namePrefix"), r"[A-Za-z0-9_-]{1,256}", "topic name")


SNS_PROTOCOLS = ("http", "https", "email", "email-json", "sms", "sqs", "application", "lambda", "firehose")


def _sns_subscription(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    if p.get("protocol") not in SNS_PROTOCOLS:
        yield f"protocol {p.get('protocol')!r} is not one of {', '.join(SNS_PROTOCOLS)}"
    if p.get("protocol") == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(p.get("endpoint") or "")):
        yield f"email endpoint {p.get('endpoint')!r} is not an address"


ALARM_OPERATORS = (
    "GreaterThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
)


def _cloudwatch_alarm(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _length(physical(r, prefix_key=None), 1, 255, "alarm name")
    period = p.get("period")
    if period is not None and not (int(period) in (10, 20, 30) or (int(period) >= 60 and int(period) % 60 == 0)):
        yield f"period {period} is not 10, 20, 30 or a multiple of 60"
    if period is not None and p.get("evaluationPeriods") is not None:
        if int(p["evaluationPeriods"]) < 1:
            yield "evaluationPeriods must be at least 1"
        if int(period) * int(p["evaluationPeriods"]) > 86400:
            yield "period x evaluationPeriods is over one day"
    if p.get("statistic") not in (None, "SampleCount", "Average", "Sum", "Minimum", "Maximum"):
        yield f"statistic {p.get('statistic')!r}"
    if p.get("comparisonOperator") not in ALARM_OPERATORS:
        yield f"comparisonOperator {p.get('comparisonOperator')!r}"
    if p.get("treatMissingData", "missing") not in ("breaching", "notBreaching", "ignore", "missing"):
        yield f"treatMissingData {p.get('treatMissingData')!r}"
    dims = p.get("dimensions") or {}
    if len(dims) > 30:
        yield f"{len(dims)} dimensions, at most 30"
    for k, v in dims.items():
        yield from _length(str(k), 1, 255, "dimension name")
        yield from _length(str(v or ""), 1, 1024, f"dimension {k} value")


# ------------------------------------------------------------------------------------------------ Alibaba Cloud
ALI_TAGGED = (
    "alicloud:vpc/network:Network",
    "alicloud:vpc/switch:Switch",
    "alicloud:vpc/natGateway:NatGateway",
    "alicloud:vpc/routeTable:RouteTable",
    "alicloud:ecs/eipAddress:EipAddress",
    "alicloud:ecs/securityGroup:SecurityGroup",
    "alicloud:ecs/instance:Instance",
    "alicloud:ecs/ecsKeyPair:EcsKeyPair",
    "alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate",
    "alicloud:ess/scalingGroup:ScalingGroup",
    "alicloud:alb/loadBalancer:LoadBalancer",
    "alicloud:alb/serverGroup:ServerGroup",
    "alicloud:oss/bucket:Bucket",
    "alicloud:kvstore/instance:Instance",
    # The on-boot path (docs/adr/0039): its secret, the secret's key in a KMS instance, and the hosts' RAM role.
    "alicloud:kms/secret:Secret",
    "alicloud:kms/key:Key",
    "alicloud:ram/role:Role",
    "alicloud:cms/alarm:Alarm",
)
ALI_NAME = r"[A-Za-z\u4e00-\u9fff][\w.:\-\u4e00-\u9fff]{1,127}"  # ECS: start with a letter; letters, digits, . _ : -


def _ali_tag_map(tags: dict[str, Any], what: str) -> Iterable[str]:
    if len(tags) > 20:
        yield f"{what}: {len(tags)} tags, at most 20"
    for k, v in tags.items():
        yield from _length(str(k), 1, 128, f"{what} key")
        yield from _length(str(v), 0, 128, f"{what} {k} value")
        if str(k).lower().startswith(("aliyun", "acs:")):
            yield f"{what} key {k!r} starts with aliyun or acs:"
        if "http://" in f"{k}{v}" or "https://" in f"{k}{v}":
            yield f"{what} {k!r} contains http:// or https://"


def _ali_tags(r: Res, _: Run | None) -> Iterable[str]:
    yield from _ali_tag_map(r.props.get("tags") or {}, "tag")
    yield from _ali_tag_map(r.props.get("templateTags") or {}, "templateTag")


def _ali_sg(r: Res, _: Run | None) -> Iterable[str]:
    name = str(r.props.get("securityGroupName") or "")
    if name:
        yield from _pattern(name, ALI_NAME, "security group name")
        yield from _no_url_start(name, "security group name")
    if r.props.get("description") is not None:
        yield from _length(str(r.props["description"]), 2, 256, "description")


def _ali_sg_rule(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    proto, ports = str(p.get("ipProtocol")), str(p.get("portRange", "-1/-1"))
    if p.get("type") not in ("ingress", "egress"):
        yield f"type {p.get('type')!r}"
    m = re.fullmatch(r"(-?\d+)/(-?\d+)", ports)
    if not m:
        yield f"portRange {ports!r} is not start/end"
    elif proto in ("tcp", "udp"):
        lo, hi = int(m[1]), int(m[2])
        if not (1 <= lo <= hi <= 65535):
            yield f"portRange {ports!r}: tcp/udp need 1 <= start <= end <= 65535"
    elif proto in ("icmp", "gre", "all") and ports != "-1/-1":
        yield f"portRange {ports!r}: {proto} takes -1/-1"
    elif proto not in ("icmp", "gre", "all", "icmpv6"):
        yield f"ipProtocol {proto!r}"
    sources = [k for k in ("cidrIp", "ipv6CidrIp", "sourceSecurityGroupId", "prefixListId") if p.get(k)]
    if len(sources) != 1:
        yield f"exactly one of cidrIp, ipv6CidrIp, sourceSecurityGroupId, prefixListId, got {sources}"
    if p.get("nicType", "internet") != "intranet":
        yield "rules of a VPC security group take nicType intranet"
    if p.get("policy", "accept") not in ("accept", "drop"):
        yield f"policy {p.get('policy')!r}"
    yield from _range(p.get("priority"), 1, 100, "priority")
    if p.get("description") is not None:
        yield from _length(str(p["description"]), 1, 512, "description")
        yield from _no_url_start(str(p["description"]), "description")


def _ali_vpc_name(key: str) -> Check:
    def check(r: Res, _: Run | None) -> Iterable[str]:
        name = r.props.get(key)
        if name:
            yield from _length(str(name), 1, 128, key)
            yield from _no_url_start(str(name), key)

    return check


HOSTNAME_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"


def _ali_disks(system: tuple[Any, Any], data: Iterable[dict[str, Any]]) -> Iterable[str]:
    category, size = system
    if category == "cloud_essd":
        yield from _range(size, 20, 2048, "ESSD system disk size (GiB)")
    for d in data:
        if d.get("category", "cloud_efficiency") == "cloud_essd":
            yield from _range(d.get("size"), 20, 65536, "ESSD data disk size (GiB)")
        if d.get("name"):
            yield from _pattern(str(d["name"]), ALI_NAME, "data disk name")


def _ali_instance(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    name = str(p.get("instanceName") or "")
    if name:
        yield from _pattern(name, ALI_NAME, "instanceName")
        yield from _no_url_start(name, "instanceName")
    host = str(p.get("hostName") or "")
    if host:
        yield from _length(host, 2, 64, "hostName")
        if not all(re.fullmatch(HOSTNAME_SEGMENT, seg) for seg in host.split(".")) or "--" in host:
            yield f"hostName {host!r}: letters, digits, single hyphens and periods, not first or last"
    yield from _user_data_size(p.get("userData"), 32768, "userData")
    yield from _ali_disks((p.get("systemDiskCategory"), p.get("systemDiskSize")), p.get("dataDisks") or [])
    yield from _range(p.get("internetMaxBandwidthOut"), 0, 100, "internetMaxBandwidthOut")


def _ali_key_pair(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(str(r.props.get("keyPairName") or ""), r"[A-Za-z][\w:-]{1,127}", "keyPairName")


def _ali_launch_template(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _pattern(str(p.get("launchTemplateName") or ""), r"[A-Za-z][\w:-]{1,127}", "launchTemplateName")
    raw = base64.b64decode(p["userData"]).decode() if p.get("userData") else ""
    yield from _user_data_size(raw, 32768, "userData")
    sd = p.get("systemDisk") or {}
    yield from _ali_disks((sd.get("category"), sd.get("size")), p.get("dataDisks") or [])
    if p.get("instanceName"):
        yield from _pattern(str(p["instanceName"]), ALI_NAME, "instanceName")


def _ali_scaling_group(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _pattern(
        str(p.get("scalingGroupName") or ""), r"[A-Za-z0-9\u4e00-\u9fff][\w.\-\u4e00-\u9fff]{1,63}", "scalingGroupName"
    )
    lo, want, hi = p.get("minSize"), p.get("desiredCapacity", p.get("minSize")), p.get("maxSize")
    if not (_num(lo) and _num(want) and _num(hi) and 0 <= lo <= want <= hi <= 2000):
        yield f"needs 0 <= minSize <= desiredCapacity <= maxSize <= 2000, got {lo}, {want}, {hi}"
    if p.get("healthCheckType", "ECS") not in ("ECS", "LOAD_BALANCER", "NONE"):
        yield f"healthCheckType {p.get('healthCheckType')!r}"
    for g in p.get("albServerGroups") or []:
        yield from _range(g.get("weight"), 0, 100, "ALB server group weight")
        yield from _range(g.get("port"), 1, 65535, "ALB server group port")


def _ali_scaling_rule(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    if p.get("scalingRuleName"):
        yield from _pattern(
            str(p["scalingRuleName"]), r"[A-Za-z0-9\u4e00-\u9fff][\w.\-\u4e00-\u9fff]{1,63}", "scalingRuleName"
        )
    if p.get("scalingRuleType") == "TargetTrackingScalingRule":
        if p.get("metricName") not in ("CpuUtilization", "IntranetTx", "IntranetRx", "MemoryUtilization"):
            yield f"metricName {p.get('metricName')!r}"
        if not p.get("targetValue") or float(p["targetValue"]) <= 0:
            yield "target tracking needs a positive targetValue"


ALB_NAME = r"[A-Za-z][\w.-]{1,127}"


def _ali_alb(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(str(r.props.get("loadBalancerName") or "ab"), ALB_NAME, "loadBalancerName")
    if len(r.props.get("zoneMappings") or []) < 2:
        yield "an ALB instance needs zone mappings in at least two zones"


def _ali_server_group(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _pattern(str(p.get("serverGroupName") or ""), ALB_NAME, "serverGroupName")
    hc = p.get("healthCheckConfig") or {}
    yield from _range(hc.get("healthCheckInterval"), 1, 50, "healthCheckInterval")
    yield from _range(hc.get("healthyThreshold"), 2, 10, "healthyThreshold")
    yield from _range(hc.get("unhealthyThreshold"), 2, 10, "unhealthyThreshold")
    yield from _range(hc.get("healthCheckTimeout"), 1, 300, "healthCheckTimeout")
    path = str(hc.get("healthCheckPath", "/"))
    yield from _pattern(path, r"/[A-Za-z0-9\-/.%?#&=]{0,79}", "healthCheckPath")
    for code in hc.get("healthCheckCodes") or []:
        if code not in ("http_2xx", "http_3xx", "http_4xx", "http_5xx"):
            yield f"healthCheckCodes {code!r}"
    for s in p.get("servers") or []:
        yield from _range(s.get("weight"), 0, 100, "server weight")
    if p.get("scheduler", "Wrr") not in ("Wrr", "Wlc", "Sch", "Uch"):
        yield f"scheduler {p.get('scheduler')!r} is not Wrr, Wlc, Sch or Uch"


def _ali_rule(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _pattern(str(p.get("ruleName") or ""), ALB_NAME, "ruleName")
    yield from _range(p.get("priority"), 1, 10000, "priority")
    for action in p.get("ruleActions") or []:
        for t in (action.get("forwardGroupConfig") or {}).get("serverGroupTuples") or []:
            yield from _range(t.get("weight"), 0, 100, "server group weight")


def _ali_listener(r: Res, _: Run | None) -> Iterable[str]:
    yield from _range(r.props.get("listenerPort"), 1, 65535, "listenerPort")
    if r.props.get("listenerProtocol") == "HTTPS" and not (r.props.get("certificates") or {}).get("certificateId"):
        yield "an HTTPS listener needs a certificate"


def _oss_bucket(r: Res, _: Run | None) -> Iterable[str]:
    name = physical(r, "bucket", None)
    yield from _pattern(name, r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", "bucket name")
    for rule in r.props.get("lifecycleRules") or []:
        yield from _length(str(rule.get("id", "")), 0, 255, "lifecycle rule id")
        for e in rule.get("expirations") or []:
            yield from _range(e.get("days"), 1, 2**31 - 1, "expiration days")


def _ram_role(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(str(r.props.get("roleName") or ""), r"[A-Za-z0-9.-]{1,64}", "roleName")


def _kms_secret(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    name = str(p.get("secretName") or "")
    yield from _pattern(name, r"[A-Za-z0-9_/+=.@-]{1,192}", "secretName")
    if name.startswith("acs/"):
        yield f"secretName {name!r} starts with acs/ (reserved for managed secrets)"
    yield from _length(str(p.get("versionId") or ""), 1, 64, "versionId")
    yield from _range(p.get("recoveryWindowInDays"), 7, 30, "recoveryWindowInDays")
    if p.get("encryptionKeyId") and not p.get("dkmsInstanceId"):
        yield "encryptionKeyId without dkmsInstanceId: the key and the secret must belong to the same KMS instance"


def _ram_policy(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(str(r.props.get("policyName") or ""), r"[A-Za-z0-9-]{1,128}", "policyName")


def _ali_eip(r: Res, _: Run | None) -> Iterable[str]:
    if r.props.get("internetChargeType") == "PayByTraffic":
        yield from _range(r.props.get("bandwidth"), 1, 200, "bandwidth (Mbit/s)")


CMS_OPERATORS = (">", ">=", "<", "<=", "!=", "==", "GreaterThanYesterday", "LessThanYesterday",
                 "GreaterThanLastWeek", "LessThanLastWeek", "GreaterThanLastPeriod", "LessThanLastPeriod")  # fmt: skip
# The ALB's server-group metrics and the dimensions CloudMonitor documents for them; every acs_alb metric's one
# statistic is Value.
ALB_SERVER_GROUP_DIMENSIONS = {"userId", "loadBalancerId", "listenerProtocol", "listenerPort", "serverGroupId"}


def _cms_alarm(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    if not str(p.get("name") or ""):
        yield "an alert rule needs a name (RuleName)"
    if not p.get("project") or not p.get("metric"):
        yield "an alert rule needs a namespace (project) and a metric"
    if not [g for g in p.get("contactGroups") or [] if g]:
        yield "an alert rule needs a contact group"
    period = p.get("period", 300)
    if not _num(period) or int(period) < 60 or int(period) % 60:
        yield f"period {period!r} is not a multiple of 60 s"
    yield from _range(p.get("silenceTime"), 300, 86400, "silenceTime")
    levels = [p.get(k) for k in ("escalationsCritical", "escalationsWarn", "escalationsInfo") if p.get(k)]
    if not levels:
        yield "an alert rule needs a Critical, Warn or Info level"
    for level in levels:
        if level.get("comparisonOperator", ">") not in CMS_OPERATORS:
            yield f"comparisonOperator {level.get('comparisonOperator')!r}"
        try:
            float(str(level.get("threshold")))
        except ValueError:
            yield f"threshold {level.get('threshold')!r} is not a number"
        if not _num(level.get("times", 3)) or int(level.get("times", 3)) < 1:
            yield f"times {level.get('times')!r} is not a positive whole number"
        if p.get("project") == "acs_alb" and level.get("statistics") != "Value":
            yield f"statistics {level.get('statistics')!r}: the acs_alb metrics have Value only"
    try:
        dims = json.loads(str(p.get("metricDimensions") or "[]"))
    except ValueError:
        yield f"metricDimensions {p.get('metricDimensions')!r} is not JSON"
        return
    if not isinstance(dims, list) or not dims or not all(isinstance(d, dict) and d for d in dims):
        yield "metricDimensions must be a JSON list of resources (objects)"
        return
    for d in dims:
        if any(not isinstance(v, str) or not v for v in d.values()):
            yield f"metricDimensions {d}: every value is a non-empty string"
        if str(p.get("metric", "")).startswith("ServerGroup") and set(d) - ALB_SERVER_GROUP_DIMENSIONS:
            yield f"metricDimensions {sorted(set(d) - ALB_SERVER_GROUP_DIMENSIONS)}: not dimensions of {p['metric']}"


def _cms_contact(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    yield from _length(str(p.get("alarmContactName") or ""), 2, 40, "alarmContactName")
    if not str(p.get("describe") or ""):
        yield "a contact needs a description (Describe)"
    if not any(p.get(k) for k in ("channelsMail", "channelsSms", "channelsAliim", "channelsDingWebHook")):
        yield "a contact needs a channel"
    mail = p.get("channelsMail")
    if mail is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(mail)):
        yield f"channelsMail {mail!r} is not an address"
    if p.get("lang", "en") not in ("en", "zh-cn"):
        yield f"lang {p.get('lang')!r} is not en or zh-cn"


def _cms_contact_group(r: Res, _: Run | None) -> Iterable[str]:
    if not str(r.props.get("alarmContactGroupName") or ""):
        yield "a contact group needs a name (ContactGroupName)"
    if any(not c for c in r.props.get("contacts") or []):
        yield "contacts: every contact is named"


def _ali_redis_password(value: str, what: str) -> Iterable[str]:
    yield from _length(value, 8, 32, what)
    classes = sum(bool(re.search(c, value)) for c in (r"[A-Z]", r"[a-z]", r"\d", r"[!@#$%^&*()_+\-=]"))
    if classes < 3:
        yield f"{what} uses {classes} of the four character types, at least 3"


def _ali_kvstore(r: Res, _: Run | None) -> Iterable[str]:
    p = r.props
    if p.get("password") is not None:
        yield from _ali_redis_password(str(p["password"]), "password")
    if p.get("secondaryZoneId") and p.get("secondaryZoneId") == p.get("zoneId"):
        yield "secondaryZoneId must differ from zoneId"
    for ip in p.get("securityIps") or []:
        if ip in ("0.0.0.0/0", "0.0.0.0"):  # noqa: S104 - a whitelist entry, not a bind address
            yield "securityIps opens the instance to every address"


def _ali_kvstore_account(r: Res, _: Run | None) -> Iterable[str]:
    yield from _pattern(str(r.props.get("accountName") or ""), r"[a-z][a-z0-9_]{0,15}", "accountName")
    yield from _ali_redis_password(str(r.props.get("accountPassword") or ""), "accountPassword")


def _redis_password_generator(r: Res, _: Run | None) -> Iterable[str]:
    """The generated Redis password must satisfy both managed services (ElastiCache AUTH, ApsaraDB accounts)."""
    if "redis" not in r.name:
        return
    p = r.props
    yield from _range(p.get("length"), 16, 32, "length")
    if p.get("special"):
        yield 'special characters: ElastiCache refuses / " @ in AUTH tokens'
    for key in ("minUpper", "minLower", "minNumeric"):
        if not p.get(key):
            yield f"{key} >= 1 needed for ApsaraDB's three character types"


# --------------------------------------------------------------------------------------------------- the table
EC2_API = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference"
ELB_API = "https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference"
ECS_API = "https://www.alibabacloud.com/help/en/ecs/developer-reference"
ALB_API = "https://www.alibabacloud.com/help/en/slb/application-load-balancer/developer-reference"
CMS_API = "https://www.alibabacloud.com/help/en/cms/cloudmonitor-1-0/developer-reference"
ALB_METRICS = "https://www.alibabacloud.com/help/en/slb/application-load-balancer/user-guide/alb-monitoring-metrics"

RULES: list[Rule] = [
    Rule(
        ("aws:sns/topic:Topic",),
        "SNS topic name: 1..256 letters, digits, hyphens and underscores",
        "https://docs.aws.amazon.com/sns/latest/api/API_CreateTopic.html",
        _sns_topic,
        ("aws:sns/topic:Topic", "zone alarms", {}),
    ),
    Rule(
        ("aws:sns/topicSubscription:TopicSubscription",),
        "SNS subscription: a known protocol; an e-mail endpoint is an address",
        "https://docs.aws.amazon.com/sns/latest/api/API_Subscribe.html",
        _sns_subscription,
        ("aws:sns/topicSubscription:TopicSubscription", "s", {"protocol": "email", "endpoint": "ops"}),
    ),
    Rule(
        ("aws:cloudwatch/metricAlarm:MetricAlarm",),
        "CloudWatch alarm: name 1..255, period 10/20/30 or a multiple of 60, evaluation within a day, known "
        "statistic, operator and missing-data treatment, up to 30 dimensions with non-empty values",
        "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html",
        _cloudwatch_alarm,
        (
            "aws:cloudwatch/metricAlarm:MetricAlarm",
            "a",
            {"period": 90, "comparisonOperator": "LessThan", "dimensions": {"TargetGroup": ""}},
        ),
    ),
    Rule(
        AWS_TAGGED,
        "AWS tags: at most 50, key 1..128 and value 0..256 of letters, digits, spaces, + - = . _ : / @; no aws: keys",
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions",
        _aws_tags,
        ("aws:ec2/vpc:Vpc", "v", {"tags": {"aws:stack": "x"}}),
    ),
    Rule(
        ("aws:ec2/securityGroup:SecurityGroup",),
        "security group name: up to 255 characters of a-zA-Z0-9 spaces ._-:/()#,@[]+=&;{}!$*, cannot start with sg-",
        f"{EC2_API}/API_CreateSecurityGroup.html",
        _aws_sg_name,
        ("aws:ec2/securityGroup:SecurityGroup", "sg-lb", {"description": "HTTPS load balancer"}),
    ),
    Rule(
        (
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        ),
        "security group rule: ports 0..65535 with from <= to for tcp/udp, none for -1, exactly one peer",
        f"{EC2_API}/API_IpPermission.html; https://www.pulumi.com/registry/packages/aws/api-docs/vpc/securitygroupingressrule/",
        _aws_sg_rule,
        (
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "r",
            {"ipProtocol": "tcp", "fromPort": 443, "toPort": 80, "cidrIpv4": "10.0.0.0/8"},
        ),
    ),
    Rule(
        ("aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup"),
        "load balancer / target group name: 1..32 alphanumerics and hyphens, no hyphen first or last, not internal-",
        f"{ELB_API}/API_CreateLoadBalancer.html; {ELB_API}/API_CreateTargetGroup.html",
        _aws_elb_name,
        ("aws:lb/targetGroup:TargetGroup", "assistant-blue-ap-southeast-1a-tg", {}),
    ),
    Rule(
        ("aws:lb/loadBalancer:LoadBalancer",),
        "ALB: idle timeout 1..4000 s, subnets in at least two Availability Zones",
        f"{ELB_API}/API_CreateLoadBalancer.html; {ELB_API}/API_LoadBalancerAttribute.html",
        _aws_alb,
        ("aws:lb/loadBalancer:LoadBalancer", "lb", {"idleTimeout": 0, "subnets": ["s1"]}),
    ),
    Rule(
        ("aws:lb/targetGroup:TargetGroup",),
        "target group: health check interval 5..300, timeout 2..120 below the interval, thresholds 2..10, path /..., "
        "matcher 200..499, deregistration delay 0..3600, cross-zone load balancing true/false/"
        "use_load_balancer_configuration",
        f"{ELB_API}/API_CreateTargetGroup.html; {ELB_API}/API_TargetGroupAttribute.html",
        _aws_target_group,
        (
            "aws:lb/targetGroup:TargetGroup",
            "tg",
            {"healthCheck": {"interval": 15, "timeout": 20, "path": "healthz"}, "loadBalancingCrossZoneEnabled": "on"},
        ),
    ),
    Rule(
        ("aws:lb/listener:Listener",),
        "listener: port 1..65535, a certificate for HTTPS, forward to 1..5 target groups with weights 0..999",
        f"{ELB_API}/API_CreateListener.html; {ELB_API}/API_ForwardActionConfig.html; "
        f"{ELB_API}/API_TargetGroupTuple.html",
        _aws_listener,
        (
            "aws:lb/listener:Listener",
            "l",
            {
                "port": 443,
                "protocol": "HTTPS",
                "certificateArn": "a",
                "defaultActions": [{"type": "forward", "forward": {"targetGroups": [{"arn": "x", "weight": 1000}]}}],
            },
        ),
    ),
    Rule(
        ("aws:s3/bucket:Bucket",),
        "bucket name: 3..63 lowercase letters, digits, . and -; a letter or digit at both ends; no reserved affixes",
        "https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html",
        _s3_bucket,
        ("aws:s3/bucket:Bucket", "Backup_Primary", {}),
    ),
    Rule(
        ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",),
        "lifecycle rule: id 1..255 characters, expiration and noncurrent days positive",
        "https://docs.aws.amazon.com/AmazonS3/latest/API/API_LifecycleRule.html",
        _s3_lifecycle,
        (
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
            "lc",
            {"rules": [{"id": "r", "expiration": {"days": 0}}]},
        ),
    ),
    Rule(
        ("aws:ec2/instance:Instance",),
        "instance: user data at most 16 KB before base64, gp3 volumes 1..16384 GiB, metadata hop limit 1..64",
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html; "
        "https://docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html; "
        f"{EC2_API}/API_InstanceMetadataOptionsRequest.html",
        _aws_instance,
        ("aws:ec2/instance:Instance", "i", {"userData": "x" * 16385}),
    ),
    Rule(
        ("aws:ec2/launchTemplate:LaunchTemplate",),
        "launch template: name 3..128 of a-zA-Z0-9().-/_, user data at most 16 KB before base64, gp3 sizes",
        f"{EC2_API}/API_CreateLaunchTemplate.html; https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html",
        _aws_launch_template,
        ("aws:ec2/launchTemplate:LaunchTemplate", "lt:blue", {}),
    ),
    Rule(
        ("aws:autoscaling/group:Group",),
        "Auto Scaling group: name 1..255, min <= desired <= max, health check type, at most 50 tags",
        "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html",
        _aws_asg,
        ("aws:autoscaling/group:Group", "g", {"minSize": 2, "desiredCapacity": 1, "maxSize": 3}),
    ),
    Rule(
        ("aws:autoscaling/policy:Policy",),
        "scaling policy: target tracking with a positive target and a predefined metric (ALB request count needs its "
        "resource label)",
        "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_PredefinedMetricSpecification.html",
        _aws_scaling_policy,
        (
            "aws:autoscaling/policy:Policy",
            "p",
            {"policyType": "TargetTrackingScaling", "targetTrackingConfiguration": {"targetValue": 0}},
        ),
    ),
    Rule(
        ("aws:iam/role:Role",),
        "IAM role name: 1..64 of letters, digits and +=,.@_-",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html",
        _aws_iam_name(64),
        ("aws:iam/role:Role", "hosts-data-backup-role-for-the-data-hosts-of-this-stack-x", {}),
    ),
    Rule(
        ("aws:iam/rolePolicy:RolePolicy", "aws:iam/instanceProfile:InstanceProfile"),
        "inline policy / instance profile name: 1..128 of letters, digits and +=,.@_-",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_PutRolePolicy.html; "
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateInstanceProfile.html",
        _aws_iam_name(128),
        ("aws:iam/rolePolicy:RolePolicy", "data backup", {}),
    ),
    Rule(
        ("aws:ec2/keyPair:KeyPair",),
        "key pair name: up to 255 ASCII characters",
        f"{EC2_API}/API_ImportKeyPair.html",
        _aws_key_pair,
        ("aws:ec2/keyPair:KeyPair", "k", {"keyName": "clé"}),
    ),
    Rule(
        ("aws:route53/record:Record",),
        "record: a known type, TTL 0..2147483647, no TTL on an alias",
        "https://docs.aws.amazon.com/Route53/latest/APIReference/API_ResourceRecordSet.html",
        _aws_record,
        ("aws:route53/record:Record", "r", {"type": "ALIAS", "ttl": 60}),
    ),
    Rule(
        ("aws:elasticache/replicationGroup:ReplicationGroup",),
        "replication group: id 1..40 lowercase, starts with a letter, no -- or trailing -; AUTH token 16..128 without "
        '/ " @ and only with in-transit encryption; failover needs two nodes, Multi-AZ needs failover',
        "https://docs.aws.amazon.com/AmazonElastiCache/latest/APIReference/API_CreateReplicationGroup.html",
        _aws_cache_group,
        (
            "aws:elasticache/replicationGroup:ReplicationGroup",
            "r",
            {"replicationGroupId": "Redis--", "description": "d", "authToken": "short"},
        ),
    ),
    Rule(
        ("aws:elasticache/subnetGroup:SubnetGroup",),
        "cache subnet group name: up to 255 lowercase letters, digits and hyphens",
        "https://docs.aws.amazon.com/AmazonElastiCache/latest/APIReference/API_CreateCacheSubnetGroup.html",
        _aws_cache_subnets,
        ("aws:elasticache/subnetGroup:SubnetGroup", "Redis_Subnets", {}),
    ),
    Rule(
        ("aws:ebs/volume:Volume",),
        "EBS gp3 volume: 1..16384 GiB",
        "https://docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html",
        _aws_volume,
        ("aws:ebs/volume:Volume", "v", {"type": "gp3", "size": 20000}),
    ),
    Rule(
        ALI_TAGGED,
        "Alibaba Cloud tags: at most 20, key 1..128 and value 0..128, no aliyun/acs: keys, no http:// or https://",
        f"{ECS_API}/api-ecs-2014-05-26-tagresources",
        _ali_tags,
        ("alicloud:vpc/network:Network", "v", {"tags": {"acs:stack": "x"}}),
    ),
    Rule(
        ("alicloud:ecs/securityGroup:SecurityGroup",),
        "security group name: 2..128 characters, starts with a letter, letters, digits, . _ : -; not http(s)://",
        f"{ECS_API}/api-ecs-2014-05-26-createsecuritygroup",
        _ali_sg,
        ("alicloud:ecs/securityGroup:SecurityGroup", "s", {"securityGroupName": "-lb"}),
    ),
    Rule(
        ("alicloud:ecs/securityGroupRule:SecurityGroupRule",),
        "security group rule: tcp/udp port range 1..65535 as start/end, -1/-1 otherwise, one source, nic type "
        "intranet in a VPC, priority 1..100, description 1..512",
        f"{ECS_API}/api-ecs-2014-05-26-authorizesecuritygroup",
        _ali_sg_rule,
        (
            "alicloud:ecs/securityGroupRule:SecurityGroupRule",
            "r",
            {
                "type": "ingress",
                "ipProtocol": "tcp",
                "portRange": "0/443",
                "cidrIp": "10.0.0.0/8",
                "nicType": "intranet",
            },
        ),
    ),
    Rule(
        (
            "alicloud:vpc/network:Network",
            "alicloud:vpc/switch:Switch",
            "alicloud:vpc/natGateway:NatGateway",
            "alicloud:vpc/routeTable:RouteTable",
        ),
        "VPC, vSwitch, NAT gateway and route table names: 1..128 characters, not starting with http:// or https://",
        "https://www.alibabacloud.com/help/en/vpc/developer-reference/api-vpc-2016-04-28-createvpc",
        lambda r, run: [
            *_ali_vpc_name("vpcName")(r, run),
            *_ali_vpc_name("vswitchName")(r, run),
            *_ali_vpc_name("natGatewayName")(r, run),
            *_ali_vpc_name("routeTableName")(r, run),
        ],
        ("alicloud:vpc/network:Network", "v", {"vpcName": "https://vpc"}),
    ),
    Rule(
        ("alicloud:ecs/instance:Instance",),
        "ECS instance: name 2..128 from a letter; Linux host name 2..64 of letters, digits, single - and .; user data "
        "at most 32 KB; ESSD system disk 20..2048 GiB, data disk 20..65536 GiB; outbound bandwidth 0..100 Mbit/s",
        f"{ECS_API}/api-ecs-2014-05-26-runinstances",
        _ali_instance,
        (
            "alicloud:ecs/instance:Instance",
            "i",
            {"instanceName": "1-host", "hostName": "a--b", "systemDiskCategory": "cloud_essd", "systemDiskSize": 10},
        ),
    ),
    Rule(
        ("alicloud:ecs/ecsKeyPair:EcsKeyPair",),
        "key pair name: 2..128, starts with a letter, letters, digits, : _ -",
        f"{ECS_API}/api-ecs-2014-05-26-importkeypair",
        _ali_key_pair,
        ("alicloud:ecs/ecsKeyPair:EcsKeyPair", "k", {"keyPairName": "prod.admin"}),
    ),
    Rule(
        ("alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate",),
        "launch template: name 2..128 from a letter of letters, digits, : _ -; user data at most 32 KB; ESSD sizes",
        f"{ECS_API}/api-ecs-2014-05-26-createlaunchtemplate",
        _ali_launch_template,
        ("alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate", "t", {"launchTemplateName": "prod.assistant"}),
    ),
    Rule(
        ("alicloud:ess/scalingGroup:ScalingGroup",),
        "scaling group: name 2..64 from a letter or digit of letters, digits, . _ -; 0 <= min <= desired <= max <= "
        "2000; ALB weights 0..100",
        "https://www.alibabacloud.com/help/en/auto-scaling/developer-reference/api-ess-2014-08-28-createscalinggroup",
        _ali_scaling_group,
        ("alicloud:ess/scalingGroup:ScalingGroup", "g", {"scalingGroupName": "-g", "minSize": 1, "maxSize": 0}),
    ),
    Rule(
        ("alicloud:ess/scalingRule:ScalingRule",),
        "scaling rule: name 2..64; target tracking on a system metric with a positive target",
        "https://www.alibabacloud.com/help/en/auto-scaling/developer-reference/api-ess-2014-08-28-createscalingrule",
        _ali_scaling_rule,
        (
            "alicloud:ess/scalingRule:ScalingRule",
            "r",
            {"scalingRuleType": "TargetTrackingScalingRule", "metricName": "Cpu", "targetValue": 50},
        ),
    ),
    Rule(
        ("alicloud:alb/loadBalancer:LoadBalancer",),
        "ALB instance: name 2..128 from a letter of letters, digits, . _ -; zone mappings in at least two zones",
        f"{ALB_API}/api-alb-2020-06-16-createloadbalancer",
        _ali_alb,
        ("alicloud:alb/loadBalancer:LoadBalancer", "l", {"loadBalancerName": "lb", "zoneMappings": [{}]}),
    ),
    Rule(
        ("alicloud:alb/serverGroup:ServerGroup",),
        "server group: name 2..128 from a letter; health check interval 1..50 s, thresholds 2..10, path from / "
        "up to 80 characters, codes http_2xx..http_5xx; server weight 0..100; scheduler Wrr, Wlc, Sch or Uch",
        f"{ALB_API}/api-alb-2020-06-16-createservergroup",
        _ali_server_group,
        (
            "alicloud:alb/serverGroup:ServerGroup",
            "s",
            {"serverGroupName": "blue-a", "healthCheckConfig": {"healthCheckInterval": 60}, "scheduler": "wrr"},
        ),
    ),
    Rule(
        ("alicloud:alb/rule:Rule",),
        "forwarding rule: name 2..128 from a letter, priority 1..10000, server group weights 0..100",
        f"{ALB_API}/api-alb-2020-06-16-createrule",
        _ali_rule,
        ("alicloud:alb/rule:Rule", "r", {"ruleName": "weighted", "priority": 0}),
    ),
    Rule(
        ("alicloud:alb/listener:Listener",),
        "listener: port 1..65535, a certificate for HTTPS",
        f"{ALB_API}/api-alb-2020-06-16-createlistener",
        _ali_listener,
        ("alicloud:alb/listener:Listener", "l", {"listenerPort": 443, "listenerProtocol": "HTTPS"}),
    ),
    Rule(
        ("alicloud:oss/bucket:Bucket",),
        "OSS bucket name: 3..63 lowercase letters, digits, hyphens, letter or digit at both ends; lifecycle days >= 1",
        "https://www.alibabacloud.com/help/en/oss/user-guide/bucket-naming-conventions",
        _oss_bucket,
        ("alicloud:oss/bucket:Bucket", "b", {"bucket": "backup.primary"}),
    ),
    Rule(
        ("alicloud:kms/secret:Secret",),
        "KMS secret: name up to 192 of letters, digits and _ / + = . @ -, not acs/...; version id up to 64; "
        "recovery window 7..30 days; a key of the same KMS instance",
        "https://www.alibabacloud.com/help/doc-detail/154490.htm",
        _kms_secret,
        (
            "alicloud:kms/secret:Secret",
            "s",
            {"secretName": "acs/onboot secret", "versionId": "v" * 65},  # pragma: allowlist secret
        ),
    ),
    Rule(
        ("alicloud:ram/role:Role",),
        "RAM role name: 1..64 letters, digits, periods and hyphens",
        "https://www.alibabacloud.com/help/en/ram/developer-reference/api-ram-2015-05-01-createrole",
        _ram_role,
        ("alicloud:ram/role:Role", "r", {"roleName": "data_backup"}),
    ),
    Rule(
        ("alicloud:ram/policy:Policy", "alicloud:ram/rolePolicyAttachment:RolePolicyAttachment"),
        "RAM policy name: 1..128 letters, digits and hyphens",
        "https://www.alibabacloud.com/help/en/ram/developer-reference/api-ram-2015-05-01-createpolicy",
        _ram_policy,
        ("alicloud:ram/policy:Policy", "p", {"policyName": "data.backup"}),
    ),
    Rule(
        ("alicloud:ecs/eipAddress:EipAddress",),
        "EIP billed by traffic: bandwidth 1..200 Mbit/s",
        "https://www.alibabacloud.com/help/en/eip/developer-reference/api-vpc-2016-04-28-allocateeipaddress",
        _ali_eip,
        ("alicloud:ecs/eipAddress:EipAddress", "e", {"internetChargeType": "PayByTraffic", "bandwidth": "500"}),
    ),
    Rule(
        ("alicloud:kvstore/instance:Instance",),
        "ApsaraDB for Redis instance: password 8..32 with 3 of upper, lower, digit, special; secondary zone differs",
        "https://www.alibabacloud.com/help/en/redis/developer-reference/api-r-kvstore-2015-01-01-createinstance",
        _ali_kvstore,
        ("alicloud:kvstore/instance:Instance", "r", {"password": "a" * 40, "zoneId": "z", "secondaryZoneId": "z"}),
    ),
    Rule(
        ("alicloud:kvstore/account:Account",),
        "ApsaraDB for Redis account: name up to 16 lowercase letters, digits, _ from a letter; password 8..32, 3 types",
        "https://www.alibabacloud.com/help/en/redis/developer-reference/api-r-kvstore-2015-01-01-createaccount",
        _ali_kvstore_account,
        (
            "alicloud:kvstore/account:Account",
            "a",
            {"accountName": "ai-assistant", "accountPassword": "Passw0rd"},  # pragma: allowlist secret
        ),
    ),
    Rule(
        ("alicloud:cms/alarm:Alarm",),
        "CloudMonitor alert rule: a name, a namespace and metric, a contact group, a period of whole minutes, "
        "silence 300..86400 s, a level with a known operator, a numeric threshold, times >= 1, the metric's own "
        "statistic (Value for acs_alb) and dimensions (a JSON list; the server-group metrics' documented keys)",
        f"{CMS_API}/api-cms-2019-01-01-putresourcemetricrule; {ALB_METRICS}; "
        "https://www.pulumi.com/registry/packages/alicloud/api-docs/cms/alarm/",
        _cms_alarm,
        (
            "alicloud:cms/alarm:Alarm",
            "a",
            {
                "name": "x",
                "project": "acs_alb",
                "metric": "ServerGroupHealthyHostCount",
                "contactGroups": ["g"],
                "period": 90,
                "escalationsCritical": {"statistics": "Minimum", "comparisonOperator": "<", "threshold": "1"},
                "metricDimensions": '[{"serverGroupId": "sgp-1", "zoneId": "cn-hangzhou-h"}]',
            },
        ),
    ),
    Rule(
        ("alicloud:cms/alarmContact:AlarmContact",),
        "CloudMonitor contact: name 2..40 characters, a description, a channel; e-mail an address; lang en or zh-cn",
        f"{CMS_API}/api-cms-2019-01-01-putcontact; "
        "https://www.pulumi.com/registry/packages/alicloud/api-docs/cms/alarmcontact/",
        _cms_contact,
        ("alicloud:cms/alarmContact:AlarmContact", "c", {"alarmContactName": "x" * 41, "channelsMail": "ops"}),
    ),
    Rule(
        ("alicloud:cms/alarmContactGroup:AlarmContactGroup",),
        "CloudMonitor contact group: a name; its contacts named",
        f"{CMS_API}/api-cms-2019-01-01-putcontactgroup",
        _cms_contact_group,
        ("alicloud:cms/alarmContactGroup:AlarmContactGroup", "g", {"contacts": [""]}),
    ),
    Rule(
        ("random:index/randomPassword:RandomPassword",),
        "the Redis password is valid for both managed services: 16..32 characters (ElastiCache AUTH 16..128, ApsaraDB "
        "8..32), no special characters, upper, lower and digits present",
        "https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/auth.html; "
        "https://www.alibabacloud.com/help/en/redis/developer-reference/api-r-kvstore-2015-01-01-createaccount",
        _redis_password_generator,
        ("random:index/randomPassword:RandomPassword", "internal-redis-password", {"length": 40, "special": False}),
    ),
]

# Types the program registers that take no name, tag or argument the provider constrains beyond what Pulumi's own
# schema types already enforce (ids and ARNs passed between resources).
UNCONSTRAINED: dict[str, str] = {
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "ids only",
    # The on-boot secret (docs/adr/0039): auto-named `hosts-onboot-<7 characters>`, letters, digits and hyphens, far
    # below CreateSecret's 512 characters, and not a hyphen plus six characters at the end, which the API reads as an
    # ARN suffix (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html).
    "aws:secretsmanager/secret:Secret": "auto-named, a fixed logical name",  # pragma: allowlist secret
    # An id and a JSON value of a few KiB (the limit is 65,536 bytes).
    "aws:secretsmanager/secretVersion:SecretVersion": "an id and a small value",  # pragma: allowlist secret
    "aws:ec2/eip:Eip": "domain vpc only (tags covered above)",
    "aws:ec2/natGateway:NatGateway": "ids only (tags covered above)",
    "aws:ec2/vpc:Vpc": "CIDR validated by infra/config.py (tags covered above)",
    "aws:ec2/subnet:Subnet": "CIDRs carved from the VPC CIDR (tags covered above)",
    "aws:ec2/internetGateway:InternetGateway": "ids only (tags covered above)",
    "aws:ec2/routeTable:RouteTable": "ids only (tags covered above)",
    "aws:acm/certificate:Certificate": "domain validated by infra/config.py (tags covered above)",
    "aws:acm/certificateValidation:CertificateValidation": "ids only",
    "aws:s3/bucketVersioning:BucketVersioning": "a fixed status",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "booleans",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "a fixed enum",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "a fixed enum",
    "aws:s3/bucketPolicy:BucketPolicy": "IAM JSON, checked by the policy pack",
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": "ids; versioning order checked in test_program",
    "aws:ebs/volumeAttachment:VolumeAttachment": "ids and a device name",
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": "ids and the target group's port",
    "alicloud:vpc/snatEntry:SnatEntry": "ids only",
    "alicloud:vpc/routeEntry:RouteEntry": "ids and a CIDR",
    "alicloud:vpc/routeTableAttachment:RouteTableAttachment": "ids only",
    "alicloud:ecs/eipAssociation:EipAssociation": "ids only",
    "alicloud:alb/loadBalancerSecurityGroupAttachment:LoadBalancerSecurityGroupAttachment": "ids only",
    "alicloud:oss/bucketAcl:BucketAcl": "a fixed enum",
    "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock": "a boolean",
    "alicloud:oss/bucketReplication:BucketReplication": "ids and a region endpoint",
    "alicloud:dns/alidnsRecord:AlidnsRecord": "the record comes from the validated domain",
    "alicloud:ecs/ecsDisk:EcsDisk": "sizes from the tier catalogue (tags covered above)",
    "alicloud:ecs/ecsDiskAttachment:EcsDiskAttachment": "ids only",
    # The on-boot secret's key in the operator's KMS instance: an instance id checked by infra/config.py, fixed
    # spec and usage (tags covered above).
    "alicloud:kms/key:Key": "an instance id and fixed enums",
    "tls:index/privateKey:PrivateKey": "local resource, no cloud API",  # pragma: allowlist secret
    "tls:index/selfSignedCert:SelfSignedCert": "local resource, no cloud API",
    "command:local:Command": "runs on the operator's machine",
}


def _violations(run: Run) -> list[str]:
    out = []
    for r in run.resources:
        for rule in RULES:
            if r.typ in rule.types:
                out += [f"{r.typ} {r.name}: {msg} [{rule.source}]" for msg in rule.check(r, run)]
    return out


def _is_component(typ: str) -> bool:
    return typ.startswith(("ai-assistant:", "pulumi:providers:"))


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_every_generated_resource_meets_the_provider_rules(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = (scaled_run if autoscaling else stack_run)(cloud, tier)
    assert _violations(run) == []


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_both_colours_and_a_long_stack_config_meet_the_provider_rules(cloud: str) -> None:
    run = run_program(config_for(cloud, "enterprise", deployColors=["blue", "green"], canaryWeight=10))
    assert _violations(run) == []


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_every_resource_type_has_a_rule_or_a_reason(
    stack_run: Get, scaled_run: Get, cloud: str, autoscaling: bool
) -> None:
    covered = {t for rule in RULES for t in rule.types} | set(UNCONSTRAINED)
    seen = {r.typ for r in (scaled_run if autoscaling else stack_run)(cloud, "enterprise").resources}
    assert sorted(t for t in seen if not _is_component(t) and t not in covered) == []


@pytest.mark.parametrize("rule", RULES, ids=[r.what.split(":")[0] for r in RULES])
def test_each_rule_rejects_its_broken_example(rule: Rule) -> None:
    typ, name, inputs = rule.bad
    assert typ in rule.types
    broken = Res(typ, name, f"{name}-id", inputs, {})
    assert list(rule.check(broken, None)), f"{rule.what} accepted {inputs}"


@pytest.mark.parametrize("rule", RULES, ids=[r.what.split(":")[0] for r in RULES])
def test_each_rule_cites_a_provider_document(rule: Rule) -> None:
    assert all(
        s.strip().startswith(
            ("https://docs.aws.amazon.com/", "https://www.alibabacloud.com/help/", "https://www.pulumi.com/registry/")
        )
        for s in rule.source.split(";")
    ), rule.source


def test_the_sg_prefix_rule_catches_auto_named_groups() -> None:
    """The refusal that started issue 19: a group whose logical name starts with sg- and has no explicit name."""
    rule = next(r for r in RULES if "cannot start with sg-" in r.what)
    auto = Res("aws:ec2/securityGroup:SecurityGroup", "sg-assistant", "x", {"description": "assistant hosts"}, {})
    assert any("starts with sg-" in m for m in rule.check(auto, None))
    named = Res("aws:ec2/securityGroup:SecurityGroup", "sg-assistant", "x", {"namePrefix": "ai-assistant-"}, {})
    assert list(rule.check(named, None)) == []
