"""One deployment across two zones, for every cloud x tier under mocks: scaling policies on every scaling group, and
the stack's tags on every Alibaba Cloud resource that takes tags (the AWS provider adds them as default tags)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.tiers import TIERS
from tests.infra.conftest import CASES
from tests.infra.harness import Run

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
    import json

    run = stack_run("aws", tier)
    for p in run.of("pulumi:providers:aws"):
        raw = p.props["defaultTags"]
        assert (json.loads(raw) if isinstance(raw, str) else raw)["tags"] == STACK_TAGS, p.name
