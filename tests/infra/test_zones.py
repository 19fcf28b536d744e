"""One deployment across two zones, for every cloud x tier under mocks: one Redis (managed, standby in the second
zone) and one knowledge base for every assistant host, scaling policies on every scaling group, and the stack's tags
on every Alibaba Cloud resource that takes tags (the AWS provider adds them as default tags). A NAT per zone is
checked in test_program.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from infra.tiers import TIERS
from tests.infra.conftest import CASES
from tests.infra.harness import Run, config_for, is_secret, ports_between, run_program, unwrap

Get = Callable[[str, str], Run]
STACK_TAGS = {"ai-assistant:stack": "test", "ai-assistant:managed-by": "pulumi"}


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_every_scaling_group_has_a_target_tracking_policy(scaled_run: Get, cloud: str, tier: str) -> None:
    run = scaled_run(cloud, tier)
    if cloud == "aws":
        groups = run.of("aws:autoscaling/group:Group")
        policies = run.of("aws:autoscaling/policy:Policy")
        by_group = {p.props["autoscalingGroupName"]: p.props for p in policies}
        assert len(groups) == 2 and sorted(by_group) == sorted(g.outputs["name"] for g in groups)
        for p in by_group.values():
            assert p["policyType"] == "TargetTrackingScaling"
            spec = p["targetTrackingConfiguration"]
            assert spec["predefinedMetricSpecification"]["predefinedMetricType"] == "ASGAverageCPUUtilization"
            assert 0 < spec["targetValue"] < 100
        for g in groups:
            assert run.opts(g).ignore_changes == ["desired_capacity"], "a pulumi up must not undo a scale-out"
    else:
        groups = {g.id: g for g in run.of("alicloud:ess/scalingGroup:ScalingGroup")}
        rules = run.of("alicloud:ess/scalingRule:ScalingRule")
        assert sorted(r.props["scalingGroupId"] for r in rules) == sorted(groups)
        for r in rules:
            assert r.props["scalingRuleType"] == "TargetTrackingScalingRule"
            assert r.props["metricName"] == "CpuUtilization" and 0 < r.props["targetValue"] < 100
        for g in groups.values():
            assert run.opts(g).ignore_changes == ["desired_capacity"]


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize("tier", TIERS)
def test_alicloud_resources_carry_the_stack_tags(stack_run: Get, scaled_run: Get, tier: str, autoscaling: bool) -> None:
    from tests.infra.test_provider_rules import ALI_TAGGED

    run = (scaled_run if autoscaling else stack_run)("alicloud", tier)
    tagged = [r for r in run.resources if r.typ in ALI_TAGGED]
    assert len({r.typ for r in tagged}) >= 10, "the check would pass vacuously"
    missing = [f"{r.typ} {r.name}" for r in tagged if not STACK_TAGS.items() <= (r.props.get("tags") or {}).items()]
    assert missing == []


@pytest.mark.parametrize("tier", TIERS)
def test_aws_resources_get_the_stack_tags_from_the_provider(stack_run: Get, tier: str) -> None:
    run = stack_run("aws", tier)
    for p in run.of("pulumi:providers:aws"):
        raw = p.props["defaultTags"]
        assert (json.loads(raw) if isinstance(raw, str) else raw)["tags"] == STACK_TAGS, p.name


REDIS = {"aws": "aws:elasticache/replicationGroup:ReplicationGroup", "alicloud": "alicloud:kvstore/instance:Instance"}
INSTANCE = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}


def _inventory_vars(run: Run) -> dict[str, Any]:
    return dict(yaml.safe_load(run.exports["inventory"][0])["all"]["vars"])


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_one_redis_with_a_standby_in_the_second_zone_for_every_assistant_host(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = (scaled_run if autoscaling else stack_run)(cloud, tier)
    zones = config_for(cloud, tier)["zones"]
    [redis] = run.of(REDIS[cloud])
    p = redis.props
    if cloud == "aws":
        assert p["preferredCacheClusterAzs"] == zones and p["numCacheClusters"] == 2
        assert p["automaticFailoverEnabled"] is True and p["multiAzEnabled"] is True
        assert p["transitEncryptionEnabled"] is True and p["atRestEncryptionEnabled"] is True
        assert is_secret(redis.inputs["authToken"])
        host, user = redis.outputs["primaryEndpointAddress"], "default"
        # Reachable from the assistant hosts' security group only.
        [group] = [g for g in run.of("aws:ec2/securityGroup:SecurityGroup") if g.id in p["securityGroupIds"]]
        rules = [
            r.props
            for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
            if r.props["securityGroupId"] == group.id
        ]
        assistant_sg = next(
            g.id
            for g in run.of("aws:ec2/securityGroup:SecurityGroup")
            if g.props["tags"]["ai-assistant:role"] == "assistant"
        )
        assert [(r["fromPort"], r.get("referencedSecurityGroupId")) for r in rules] == [(6379, assistant_sg)]
        secret_password = unwrap(redis.inputs["authToken"])
    else:
        assert (p["zoneId"], p["secondaryZoneId"]) == tuple(zones)
        assert p["sslEnable"] == "Enable"
        private = sorted(r.props["cidrBlock"] for r in run.of("alicloud:vpc/switch:Switch") if "private" in r.name)
        assert sorted(p["securityIps"]) == private
        [account] = run.of("alicloud:kvstore/account:Account")
        assert account.props["instanceId"] == redis.id
        host, user = redis.outputs["connectionDomain"], account.props["accountName"]
        secret_password = unwrap(account.inputs["accountPassword"])
    assert run.opts(redis).protect is True
    assert _inventory_vars(run)["ai_assistant_redis"] == {"host": host, "port": 6379, "user": user, "tls": True}
    # The password the managed Redis checks is the one the hosts get (inside the hand-off's secret environment).
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert json.loads(env["AI_ASSISTANT_SECRET_VARS"])["redis_password"] == secret_password


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_one_knowledge_base_for_every_assistant_host(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = (scaled_run if autoscaling else stack_run)(cloud, tier)
    zones = config_for(cloud, tier)["zones"]
    primary = [
        r
        for r in run.of(INSTANCE[cloud])
        if r.props["tags"]["ai-assistant:role"] == "data" and r.props["tags"]["ai-assistant:zone"] == zones[0]
    ]
    [data_a] = primary
    kb = _inventory_vars(run)["ai_assistant_knowledge"]
    assert kb["store"] == "weaviate"
    assert kb["url"] == f"https://{data_a.outputs['privateIp']}:8082" and kb["grpc_port"] == 50051
    # Both Weaviate ports reach the data hosts from the assistant hosts (HTTP and gRPC), whatever the zone.
    opened = ports_between(run, cloud, to="data", src="assistant")
    assert {8082, 50051} <= opened
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert json.loads(env["AI_ASSISTANT_SECRET_VARS"])["weaviate_api_key"], "the KB key travels as a secret"


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_managed_redis_class_holds_the_tiers_redis_memory(cloud: str, tier: str) -> None:
    from infra.tiers import CATALOGUE, REDIS_CLASSES

    _, gib = REDIS_CLASSES[cloud][tier]  # type: ignore[index]
    assert gib * 1024 >= CATALOGUE[tier].data.memory_limits_mib["redis"]  # type: ignore[index]


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_failover_moves_the_knowledge_base_to_the_standby_zone(cloud: str) -> None:
    run = run_program(config_for(cloud, "standard", failover=True))
    standby = config_for(cloud, "standard")["zones"][1]
    [data_b] = [
        r
        for r in run.of(INSTANCE[cloud])
        if r.props["tags"]["ai-assistant:role"] == "data" and r.props["tags"]["ai-assistant:zone"] == standby
    ]
    assert _inventory_vars(run)["ai_assistant_knowledge"]["url"] == f"https://{data_b.outputs['privateIp']}:8082"


def _drawing() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "infra.md").read_text()
    section = text[text.index("## What gets created") :]
    return section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_the_topology_drawing_matches_the_declared_resources(stack_run: Get, cloud: str) -> None:
    from infra import alicloud_stack, aws_stack

    drawing, run = _drawing(), stack_run(cloud, "standard")
    health = {"aws": aws_stack.HEALTH_PATH, "alicloud": alicloud_stack.HEALTH_PATH}[cloud]
    assert f"{health} health checks" in drawing
    nat_type = {"aws": "aws:ec2/natGateway:NatGateway", "alicloud": "alicloud:vpc/natGateway:NatGateway"}[cloud]
    assert drawing.count("NAT gateway") == len(run.of(nat_type)) == 2
    assert len(run.of(REDIS[cloud])) == 1 and "managed Redis primary" in drawing and "managed Redis replica" in drawing
    assert "ONE Redis, ONE knowledge base" in drawing
    roles = [r.props["tags"]["ai-assistant:role"] for r in run.of(INSTANCE[cloud])]
    assert roles.count("data") == 2 and "data-a" in drawing and "data-b" in drawing
    assert roles.count("inference") == 1 and "inference-a" in drawing
    assert roles.count("bastion") == 1 and "bastion (public subnet A)" in drawing
    assert (
        "backup bucket" in drawing
        and len(run.of({"aws": "aws:s3/bucket:Bucket", "alicloud": "alicloud:oss/bucket:Bucket"}[cloud])) == 2
    )
    alarm, line = {
        "aws": ("aws:cloudwatch/metricAlarm:MetricAlarm", "AWS: CloudWatch alarm per colour and zone"),
        "alicloud": ("alicloud:cms/alarm:Alarm", "Alibaba Cloud: CloudMonitor rule per colour"),
    }[cloud]
    assert run.of(alarm) and line in drawing
