"""The CrossGuard rules (infra/policy/rules.py): silent on the real program, loud on each kind of violation."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from tests.infra.conftest import CASES
from tests.infra.harness import Res, Run

RULES_PATH = Path(__file__).resolve().parents[2] / "infra" / "policy" / "rules.py"
_spec = importlib.util.spec_from_file_location("ai_assistant_policy_rules", RULES_PATH)
assert _spec and _spec.loader
rules = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rules
_spec.loader.exec_module(rules)
POLICIES = {p.name: p for p in rules.POLICIES}
Get = Callable[[str, str], Run]


def _opts(protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def violations_of(policy_name: str, typ: str, name: str, props: dict[str, Any], *, protect: bool = False) -> list[str]:
    policy = POLICIES[policy_name]
    assert isinstance(policy, ResourceValidationPolicy)
    found: list[str] = []
    args = ResourceValidationArgs(
        typ, props, f"urn:pulumi:test::ai-assistant::{typ}::{name}", name, _opts(protect), None
    )
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


def stack_violations(run: Run) -> list[str]:
    """Runs the stack rule. property_dependencies come from matching the `bucket` input to the bucket's id/name,
    which is what the engine records at preview time when a resource takes `bucket=bucket.id`."""
    resources = [
        PolicyResource(
            r.typ, r.props, f"urn:pulumi:test::ai-assistant::{r.typ}::{r.name}", r.name, _opts(), None, None, [], {}
        )
        for r in run.resources
    ]
    by_value: dict[str, PolicyResource] = {}
    for r, pr in zip(run.resources, resources, strict=True):
        if r.typ.endswith(("s3/bucket:Bucket", "oss/bucket:Bucket")):
            by_value[r.id] = pr
            by_value[str(r.outputs.get("bucket"))] = pr
    for r, pr in zip(run.resources, resources, strict=True):
        target = by_value.get(str(r.props.get("bucket")))
        if target is not None and pr is not target:
            pr.property_dependencies = {"bucket": [target]}
    found: list[str] = []
    policy = POLICIES["buckets-complete"]
    assert isinstance(policy, StackValidationPolicy)
    policy.validate(StackValidationArgs(resources), lambda message, urn=None: found.append(message))
    return found


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_the_program_passes_every_rule(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = (scaled_run if autoscaling else stack_run)(cloud, tier)
    found = []
    for r in run.resources:
        for name, p in POLICIES.items():
            if isinstance(p, ResourceValidationPolicy):
                found += violations_of(name, r.typ, r.name, r.props, protect=bool(run.opts(r).protect))
    assert found == []
    assert stack_violations(run) == []


def _first(run: Run, typ: str, pred: Callable[[Res], bool] = lambda r: True) -> Res:
    return next(r for r in run.resources if r.typ == typ and pred(r))


def test_world_open_ssh_is_refused(stack_run: Get) -> None:
    run = stack_run("aws", "basic")
    rule = copy.deepcopy(
        _first(
            run,
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            lambda r: r.props.get("fromPort") == 22 and bool(r.props.get("cidrIpv4")),
        ).props
    )
    assert (
        violations_of(
            "no-world-ingress-except-https", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "ssh", rule
        )
        == []
    )
    rule["cidrIpv4"] = "0.0.0.0/0"
    assert violations_of(
        "no-world-ingress-except-https", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "ssh", rule
    ) == ["ssh: ingress from the whole internet on tcp 22"]
    inline = {"ingress": [{"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": ["0.0.0.0/0"]}]}
    assert violations_of("no-world-ingress-except-https", "aws:ec2/securityGroup:SecurityGroup", "web", inline)
    legacy = {"type": "ingress", "protocol": "-1", "fromPort": 0, "toPort": 0, "ipv6CidrBlocks": ["::/0"]}
    assert violations_of("no-world-ingress-except-https", "aws:ec2/securityGroupRule:SecurityGroupRule", "all", legacy)
    ali = {"type": "ingress", "ipProtocol": "tcp", "portRange": "1/65535", "cidrIp": "0.0.0.0/0"}
    assert violations_of("no-world-ingress-except-https", "alicloud:ecs/securityGroupRule:SecurityGroupRule", "a", ali)
    ali["portRange"] = "443/443"
    assert (
        violations_of("no-world-ingress-except-https", "alicloud:ecs/securityGroupRule:SecurityGroupRule", "a", ali)
        == []
    )


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_unencrypted_disk_and_open_metadata_are_refused(stack_run: Get, cloud: str) -> None:
    typ = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}[cloud]
    props = copy.deepcopy(
        _first(stack_run(cloud, "basic"), typ, lambda r: r.props["tags"]["ai-assistant:role"] == "assistant").props
    )
    if cloud == "aws":
        props["ebsBlockDevices"][0]["encrypted"] = False
        props["metadataOptions"]["httpTokens"] = "optional"
    else:
        props["dataDisks"][0]["encrypted"] = False
        props["httpTokens"] = "optional"
    assert len(violations_of("volumes-encrypted", typ, "host", props)) == 1
    assert len(violations_of("metadata-hardened", typ, "host", props)) == 1
    assert violations_of("volumes-encrypted", "aws:ebs/volume:Volume", "v", {"encrypted": False})
    lt = {
        "blockDeviceMappings": [{"deviceName": "/dev/sdf", "ebs": {"encrypted": "false"}}],
        "metadataOptions": {"httpTokens": "optional"},
    }
    assert violations_of("volumes-encrypted", "aws:ec2/launchTemplate:LaunchTemplate", "lt", lt)
    assert violations_of("metadata-hardened", "aws:ec2/launchTemplate:LaunchTemplate", "lt", lt)


def test_tags_given_as_a_list_are_read_without_error() -> None:
    """Autoscaling groups list their tags as {key, value, propagateAtLaunch}; the role rules read maps only."""
    tags = [{"key": "ai-assistant:role", "value": "assistant", "propagateAtLaunch": True}]
    for name, policy in POLICIES.items():
        if isinstance(policy, ResourceValidationPolicy):
            assert violations_of(name, "aws:autoscaling/group:Group", "g", {"tags": tags}) == [], name


ALI_TEMPLATE = "alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate"
ALI_SCALING_CONFIGURATION = "alicloud:ess/scalingConfiguration:ScalingConfiguration"


def test_alicloud_launch_template_is_held_to_the_instance_rules(scaled_run: Get) -> None:
    good = _first(scaled_run("alicloud", "basic"), ALI_TEMPLATE).props
    for rule in ("volumes-encrypted", "metadata-hardened", "no-public-instances"):
        assert violations_of(rule, ALI_TEMPLATE, "lt", good) == [], rule
    bad = copy.deepcopy(good)
    bad["systemDisk"]["encrypted"] = False
    bad["dataDisks"][0]["encrypted"] = False
    bad["httpTokens"] = "optional"
    bad["internetMaxBandwidthOut"] = 5
    assert violations_of("volumes-encrypted", ALI_TEMPLATE, "lt", bad) == [
        "lt: systemDisk.encrypted must be true",
        f"lt: dataDisks[{bad['dataDisks'][0]['name']}].encrypted must be true",  # which template comes first varies
    ]
    assert violations_of("metadata-hardened", ALI_TEMPLATE, "lt", bad) == [
        "lt: httpTokens must be 'required' (metadata security-hardening mode)"
    ]
    assert violations_of("no-public-instances", ALI_TEMPLATE, "lt", bad) == [
        "lt: only the bastion may have a public address (role assistant)"
    ]


def test_alicloud_scaling_configuration_cannot_bypass_the_rules() -> None:
    """The program does not use one (it cannot require metadata tokens), but a later change might."""
    cfg = {
        "systemDiskEncrypted": True,
        "dataDisks": [{"name": "d", "encrypted": True}],
        "httpEndpoint": "enabled",
        "internetMaxBandwidthOut": 0,
        "tags": {"ai-assistant:role": "assistant"},
    }
    assert violations_of("metadata-hardened", ALI_SCALING_CONFIGURATION, "sc", cfg) == [
        "sc: httpEndpoint must be 'disabled'; use an ECS launch template to require tokens"
    ]
    assert violations_of("volumes-encrypted", ALI_SCALING_CONFIGURATION, "sc", cfg) == []
    cfg |= {"httpEndpoint": "disabled", "systemDiskEncrypted": False, "internetMaxBandwidthOut": 1}
    cfg["dataDisks"][0]["encrypted"] = False
    assert violations_of("metadata-hardened", ALI_SCALING_CONFIGURATION, "sc", cfg) == []
    assert violations_of("volumes-encrypted", ALI_SCALING_CONFIGURATION, "sc", cfg) == [
        "sc: systemDiskEncrypted must be true",
        "sc: dataDisks[d].encrypted must be true",
    ]
    assert violations_of("no-public-instances", ALI_SCALING_CONFIGURATION, "sc", cfg)


def test_public_or_unversioned_buckets_are_refused() -> None:
    pab = {"blockPublicAcls": True, "blockPublicPolicy": False, "ignorePublicAcls": True, "restrictPublicBuckets": True}
    assert violations_of(
        "buckets-private-versioned", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "b", pab
    ) == ["b: blockPublicPolicy must be true"]
    ver = {"versioningConfiguration": {"status": "Suspended"}}
    assert violations_of("buckets-private-versioned", "aws:s3/bucketVersioning:BucketVersioning", "b", ver)
    assert violations_of(
        "buckets-private-versioned",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "b",
        {"rules": [{}]},
    )
    oss = {"versioning": {"status": "Suspended"}, "acl": "public-read"}
    assert len(violations_of("buckets-private-versioned", "alicloud:oss/bucket:Bucket", "b", oss)) == 3
    assert violations_of("buckets-private-versioned", "alicloud:oss/bucketAcl:BucketAcl", "b", {"acl": "public-read"})


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_a_bucket_missing_its_guards_is_refused(stack_run: Get, cloud: str) -> None:
    run = stack_run(cloud, "basic")
    guard = {
        "aws": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "alicloud": "alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock",
    }[cloud]
    stripped = Run(resources=[r for r in run.resources if r.typ != guard])
    found = stack_violations(stripped)
    assert len(found) == 2 and all("public access block" in f for f in found)


def test_plain_http_listener_and_public_hosts_are_refused() -> None:
    assert violations_of(
        "listeners-https",
        "aws:lb/listener:Listener",
        "l",
        {"protocol": "HTTP", "defaultActions": [{"type": "forward"}]},
    )
    assert (
        violations_of(
            "listeners-https",
            "aws:lb/listener:Listener",
            "l",
            {"protocol": "HTTP", "defaultActions": [{"type": "redirect"}]},
        )
        == []
    )
    assert violations_of("listeners-https", "alicloud:alb/listener:Listener", "l", {"listenerProtocol": "HTTP"})
    host = {"associatePublicIpAddress": True, "tags": {"ai-assistant:role": "assistant"}}
    assert violations_of("no-public-instances", "aws:ec2/instance:Instance", "h", host)
    host["tags"] = {"ai-assistant:role": "bastion"}
    assert violations_of("no-public-instances", "aws:ec2/instance:Instance", "h", host) == []
    assert violations_of(
        "no-public-instances",
        "alicloud:ecs/instance:Instance",
        "h",
        {"internetMaxBandwidthOut": 5, "tags": {"ai-assistant:role": "data"}},
    )


def test_policy_pack_files_are_wired() -> None:
    import yaml

    pack = yaml.safe_load((RULES_PATH.parent / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    assert (RULES_PATH.parent / pack["runtime"]["options"]["virtualenv"]).resolve() == (
        RULES_PATH.parents[2] / ".venv"
    ).resolve()
    main = (RULES_PATH.parent / "__main__.py").read_text()
    assert "PolicyPack(" in main and "POLICIES" in main


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_unencrypted_or_open_redis_is_refused(stack_run: Get, cloud: str) -> None:
    typ = {"aws": "aws:elasticache/replicationGroup:ReplicationGroup", "alicloud": "alicloud:kvstore/instance:Instance"}
    good = _first(stack_run(cloud, "basic"), typ[cloud]).props
    assert violations_of("redis-encrypted", typ[cloud], "redis", good) == []
    bad = copy.deepcopy(good)
    if cloud == "aws":
        bad["transitEncryptionEnabled"] = False
        bad.pop("authToken")
        assert violations_of("redis-encrypted", typ[cloud], "redis", bad) == [
            "redis: transitEncryptionEnabled must be true",
            "redis: needs an AUTH token or RBAC user groups",
        ]
    else:
        bad["sslEnable"] = "Disable"
        bad["securityIps"] = ["0.0.0.0/0"]
        assert violations_of("redis-encrypted", typ[cloud], "redis", bad) == [
            "redis: sslEnable must be Enable",
            "redis: securityIps allows every address",
        ]


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_unprotected_stateful_resources_are_refused(stack_run: Get, cloud: str) -> None:
    run = stack_run(cloud, "basic")
    instance = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}[cloud]
    data = _first(run, instance, lambda r: r.props["tags"]["ai-assistant:role"] == "data")
    assistant = _first(run, instance, lambda r: r.props["tags"]["ai-assistant:role"] == "assistant")
    assert violations_of("stateful-protected", instance, "data", data.props) == [
        "data: stateful resource without protect"
    ]
    assert violations_of("stateful-protected", instance, "data", data.props, protect=True) == []
    assert violations_of("stateful-protected", instance, "assistant", assistant.props) == []
