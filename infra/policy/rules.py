"""Security rules enforced at `pulumi preview` time, for this program and for anyone who changes it.

Each rule reads the resource's inputs as the engine passes them (camelCase property names). Messages name the
resource and the property so a failed preview says what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

WORLD = ("0.0.0.0/0", "::/0")
HTTPS = 443
# What Alibaba Cloud scaling groups launch from: the program uses launch templates; scaling configurations are
# checked too so that switching to one cannot bypass the disk, metadata and public-address rules.
ALI_LAUNCH_TEMPLATE = "alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate"
ALI_SCALING_CONFIGURATION = "alicloud:ess/scalingConfiguration:ScalingConfiguration"


def _truthy(v: Any) -> bool:
    # Launch templates carry booleans as strings ("true").
    return v is True or (isinstance(v, str) and v.lower() == "true")


def _n(v: Any) -> Any:
    """The engine passes numbers as floats; print 22, not 22.0."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _world_open(port_from: Any, port_to: Any, protocol: Any) -> bool:
    """True when a world-open rule is anything other than TCP 443 alone."""
    return not (str(protocol).lower() in ("tcp", "6") and port_from == HTTPS and port_to == HTTPS)


def _ingress_violations(args: ResourceValidationArgs) -> Iterable[str]:
    p: Mapping[str, Any] = args.props
    t = args.resource_type
    if t == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        if (p.get("cidrIpv4") in WORLD or p.get("cidrIpv6") in WORLD) and _world_open(
            p.get("fromPort"), p.get("toPort"), p.get("ipProtocol")
        ):
            yield f"{args.name}: ingress from the whole internet on {p.get('ipProtocol')} {_n(p.get('fromPort'))}"
    elif t == "aws:ec2/securityGroupRule:SecurityGroupRule":
        cidrs = [*(p.get("cidrBlocks") or []), *(p.get("ipv6CidrBlocks") or [])]
        if (
            p.get("type") == "ingress"
            and any(c in WORLD for c in cidrs)
            and _world_open(p.get("fromPort"), p.get("toPort"), p.get("protocol"))
        ):
            yield f"{args.name}: ingress from the whole internet on {p.get('protocol')} {_n(p.get('fromPort'))}"
    elif t == "aws:ec2/securityGroup:SecurityGroup":
        for rule in p.get("ingress") or []:
            cidrs = [*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])]
            if any(c in WORLD for c in cidrs) and _world_open(
                rule.get("fromPort"), rule.get("toPort"), rule.get("protocol")
            ):
                yield f"{args.name}: inline ingress from the whole internet on port {_n(rule.get('fromPort'))}"
    elif (
        t == "alicloud:ecs/securityGroupRule:SecurityGroupRule"
        and p.get("type") == "ingress"
        and (p.get("cidrIp") in WORLD or p.get("ipv6CidrIp") in WORLD)
        and not (str(p.get("ipProtocol")).lower() == "tcp" and p.get("portRange") == f"{HTTPS}/{HTTPS}")
    ):
        yield f"{args.name}: ingress from the whole internet on {p.get('ipProtocol')} {p.get('portRange')}"


def _encryption_violations(args: ResourceValidationArgs) -> Iterable[str]:
    p: Mapping[str, Any] = args.props
    t = args.resource_type
    if t == "aws:ec2/instance:Instance":
        if not _truthy((p.get("rootBlockDevice") or {}).get("encrypted")):
            yield f"{args.name}: rootBlockDevice.encrypted must be true"
        for d in p.get("ebsBlockDevices") or []:
            if not _truthy(d.get("encrypted")):
                yield f"{args.name}: ebsBlockDevices[{d.get('deviceName')}].encrypted must be true"
    elif t == "aws:ebs/volume:Volume":
        if not _truthy(p.get("encrypted")):
            yield f"{args.name}: encrypted must be true"
    elif t == "aws:ec2/launchTemplate:LaunchTemplate":
        for m in p.get("blockDeviceMappings") or []:
            if not _truthy((m.get("ebs") or {}).get("encrypted")):
                yield f"{args.name}: blockDeviceMappings[{m.get('deviceName')}].ebs.encrypted must be true"
    elif t == "alicloud:ecs/instance:Instance":
        if not _truthy(p.get("systemDiskEncrypted")):
            yield f"{args.name}: systemDiskEncrypted must be true"
        for d in p.get("dataDisks") or []:
            if not _truthy(d.get("encrypted")):
                yield f"{args.name}: dataDisks[{d.get('name')}].encrypted must be true"
    elif t == "alicloud:ecs/ecsDisk:EcsDisk" and not _truthy(p.get("encrypted")):
        yield f"{args.name}: encrypted must be true"
    elif t == ALI_LAUNCH_TEMPLATE:
        if not _truthy((p.get("systemDisk") or {}).get("encrypted")):
            yield f"{args.name}: systemDisk.encrypted must be true"
        for d in p.get("dataDisks") or []:
            if not _truthy(d.get("encrypted")):
                yield f"{args.name}: dataDisks[{d.get('name')}].encrypted must be true"
    elif t == ALI_SCALING_CONFIGURATION:
        if not _truthy(p.get("systemDiskEncrypted")):
            yield f"{args.name}: systemDiskEncrypted must be true"
        for d in p.get("dataDisks") or []:
            if not _truthy(d.get("encrypted")):
                yield f"{args.name}: dataDisks[{d.get('name')}].encrypted must be true"


def _metadata_violations(args: ResourceValidationArgs) -> Iterable[str]:
    p: Mapping[str, Any] = args.props
    t = args.resource_type
    if t in ("aws:ec2/instance:Instance", "aws:ec2/launchTemplate:LaunchTemplate"):
        md = p.get("metadataOptions") or {}
        if md.get("httpEndpoint") != "disabled" and md.get("httpTokens") != "required":
            yield f"{args.name}: metadataOptions.httpTokens must be 'required' (IMDSv2)"
    elif (
        t in ("alicloud:ecs/instance:Instance", ALI_LAUNCH_TEMPLATE)
        and p.get("httpEndpoint") != "disabled"
        and p.get("httpTokens") != "required"
    ):
        yield f"{args.name}: httpTokens must be 'required' (metadata security-hardening mode)"
    elif t == ALI_SCALING_CONFIGURATION and p.get("httpEndpoint") != "disabled":
        # A scaling configuration has no token setting: its hosts would answer token-less metadata requests.
        yield f"{args.name}: httpEndpoint must be 'disabled'; use an ECS launch template to require tokens"


def _bucket_resource_violations(args: ResourceValidationArgs) -> Iterable[str]:
    p: Mapping[str, Any] = args.props
    t = args.resource_type
    if t == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            if not _truthy(p.get(k)):
                yield f"{args.name}: {k} must be true"
    elif t == "aws:s3/bucketVersioning:BucketVersioning":
        status = (p.get("versioningConfiguration") or {}).get("status")
        if status != "Enabled":
            yield f"{args.name}: versioningConfiguration.status must be Enabled, not {status}"
    elif t == "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        for r in p.get("rules") or [{}]:
            if not (r.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm"):
                yield f"{args.name}: rules[].applyServerSideEncryptionByDefault.sseAlgorithm is required"
    elif t == "aws:s3/bucketAcl:BucketAcl":
        if p.get("acl") not in (None, "private"):
            yield f"{args.name}: acl must be private, not {p.get('acl')}"
    elif t == "alicloud:oss/bucket:Bucket":
        if (p.get("versioning") or {}).get("status") != "Enabled":
            yield f"{args.name}: versioning.status must be Enabled"
        if not (p.get("serverSideEncryptionRule") or {}).get("sseAlgorithm"):
            yield f"{args.name}: serverSideEncryptionRule.sseAlgorithm is required"
        if p.get("acl") not in (None, "private"):
            yield f"{args.name}: acl must be private, not {p.get('acl')}"
    elif t == "alicloud:oss/bucketAcl:BucketAcl":
        if p.get("acl") != "private":
            yield f"{args.name}: acl must be private, not {p.get('acl')}"
    elif t == "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock" and not _truthy(
        p.get("blockPublicAccess")
    ):
        yield f"{args.name}: blockPublicAccess must be true"


def _listener_violations(args: ResourceValidationArgs) -> Iterable[str]:
    p: Mapping[str, Any] = args.props
    if args.resource_type == "aws:lb/listener:Listener":
        redirect_only = all(a.get("type") == "redirect" for a in p.get("defaultActions") or [{}])
        if p.get("protocol") != "HTTPS" and not redirect_only:
            yield f"{args.name}: protocol must be HTTPS (plain HTTP may only redirect)"
    elif args.resource_type == "alicloud:alb/listener:Listener" and p.get("listenerProtocol") != "HTTPS":
        yield f"{args.name}: listenerProtocol must be HTTPS"


def _public_instance_violations(args: ResourceValidationArgs) -> Iterable[str]:
    p: Mapping[str, Any] = args.props
    # Autoscaling groups carry tags as a list of {key, value}; only maps name a host's role.
    tags = p.get("tags")
    role = tags.get("ai-assistant:role") if isinstance(tags, Mapping) else None
    public = (args.resource_type == "aws:ec2/instance:Instance" and _truthy(p.get("associatePublicIpAddress"))) or (
        args.resource_type in ("alicloud:ecs/instance:Instance", ALI_LAUNCH_TEMPLATE, ALI_SCALING_CONFIGURATION)
        and (p.get("internetMaxBandwidthOut") or 0) > 0
    )
    if public and role != "bastion":
        yield f"{args.name}: only the bastion may have a public address (role {role})"


def _redis_violations(args: ResourceValidationArgs) -> Iterable[str]:
    """The shared Redis holds conversations: encrypted in transit (and at rest on AWS), a password, never the world."""
    p = args.props
    if args.resource_type == "aws:elasticache/replicationGroup:ReplicationGroup":
        for key in ("transitEncryptionEnabled", "atRestEncryptionEnabled"):
            if not _truthy(p.get(key)):
                yield f"{args.name}: {key} must be true"
        if not p.get("authToken") and not p.get("userGroupIds"):
            yield f"{args.name}: needs an AUTH token or RBAC user groups"
    elif args.resource_type == "alicloud:kvstore/instance:Instance":
        if p.get("sslEnable") != "Enable":
            yield f"{args.name}: sslEnable must be Enable"
        if p.get("vpcAuthMode", "Open") != "Open":
            yield f"{args.name}: vpcAuthMode must be Open (password required inside the VPC)"
        if any(ip in (*WORLD, "0.0.0.0") for ip in p.get("securityIps") or []):  # noqa: S104 - a whitelist entry
            yield f"{args.name}: securityIps allows every address"


STATEFUL = (
    "aws:s3/bucket:Bucket",
    "alicloud:oss/bucket:Bucket",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "alicloud:kvstore/instance:Instance",
)


def _protected_violations(args: ResourceValidationArgs) -> Iterable[str]:
    """Backups, the shared Redis and the data hosts must not be deleted by a `pulumi up` (docs/infra.md)."""
    tags = args.props.get("tags")
    role = tags.get("ai-assistant:role") if isinstance(tags, Mapping) else None
    is_data_host = args.resource_type in ("aws:ec2/instance:Instance", "alicloud:ecs/instance:Instance") and (
        role == "data"
    )
    if (args.resource_type in STATEFUL or is_data_host) and not args.opts.protect:
        yield f"{args.name}: stateful resource without protect"


def _resource_policy(
    name: str, description: str, check: Callable[[ResourceValidationArgs], Iterable[str]]
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        for message in check(args):
            report(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


AWS_BUCKET = "aws:s3/bucket:Bucket"
AWS_BUCKET_PARTS = {
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "encryption",
    "aws:s3/bucketVersioning:BucketVersioning": "versioning",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "a public access block",
}


def _buckets_complete(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every S3 bucket has encryption, versioning and a public access block that point at it."""
    buckets = [r for r in args.resources if r.resource_type == AWS_BUCKET]
    for bucket in buckets:
        for part_type, what in AWS_BUCKET_PARTS.items():
            parts = [
                r
                for r in args.resources
                if r.resource_type == part_type
                and any(d.urn == bucket.urn for d in (r.property_dependencies or {}).get("bucket", []))
            ]
            if not parts:
                report(f"{bucket.name}: S3 bucket without {what}", bucket.urn)
    oss = [r for r in args.resources if r.resource_type == "alicloud:oss/bucket:Bucket"]
    for bucket in oss:
        blocks = [
            r
            for r in args.resources
            if r.resource_type == "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock"
            and any(d.urn == bucket.urn for d in (r.property_dependencies or {}).get("bucket", []))
        ]
        if not blocks:
            report(f"{bucket.name}: OSS bucket without a public access block", bucket.urn)


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource_policy(
        "no-world-ingress-except-https",
        "Nothing is reachable from 0.0.0.0/0 or ::/0 except TCP 443 (the load balancer).",
        _ingress_violations,
    ),
    _resource_policy(
        "volumes-encrypted",
        "Every instance disk, volume and launch template disk is encrypted.",
        _encryption_violations,
    ),
    _resource_policy(
        "metadata-hardened", "Instance metadata needs a session token (IMDSv2 / hardened mode).", _metadata_violations
    ),
    _resource_policy(
        "buckets-private-versioned", "Buckets are private, versioned and encrypted.", _bucket_resource_violations
    ),
    _resource_policy("listeners-https", "Load balancer listeners serve HTTPS.", _listener_violations),
    _resource_policy("no-public-instances", "Only the bastion host has a public address.", _public_instance_violations),
    _resource_policy(
        "redis-encrypted", "The shared Redis is encrypted in transit, needs a password, is not open.", _redis_violations
    ),
    _resource_policy(
        "stateful-protected", "Buckets, the shared Redis and the data hosts are protected.", _protected_violations
    ),
    StackValidationPolicy(
        name="buckets-complete",
        description="Every bucket comes with encryption, versioning and a public access block.",
        validate=_buckets_complete,
    ),
]
