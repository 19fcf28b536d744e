"""`ingress: none`, the egress-only stack (issue 26): every connector in stream mode, no load balancer, nothing from
outside the VPC on 443, and a hand-off that tells the firewall role so. Under Pulumi's mocks, both clouds, all tiers."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import yaml

from infra.config import ConfigError
from infra.tiers import CLOUDS
from tests.infra.conftest import CASES
from tests.infra.harness import Run, config_for, run_program

STREAM_CONNECTORS = {
    "tg": {"platform": "telegram", "mode": "stream", "bot_username": "acme_bot"},
    "team": {"platform": "slack", "mode": "stream"},
}
# No certificate and no DNS zone: an egress-only stack has no listener to put them on.
EGRESS_ONLY: dict[str, Any] = {
    "ingress": "none",
    "connectors": STREAM_CONNECTORS,
    "alerts": {"connector": "tg", "chatId": "-1001"},
    "certificateId": None,
    "dnsZone": None,
}
LB_TYPES = ("aws:lb/", "aws:acm/", "aws:route53/", "alicloud:alb/", "alicloud:dns/")
INSTANCE = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}
_runs: dict[tuple[str, str, bool], Run] = {}


def egress_only_run(cloud: str, tier: str, autoscaling: bool = False) -> Run:
    key = (cloud, tier, autoscaling)
    if key not in _runs:
        _runs[key] = run_program(config_for(cloud, tier, EGRESS_ONLY, autoscaling=autoscaling))
    return _runs[key]


def _inventory_vars(run: Run) -> dict[str, Any]:
    return dict(yaml.safe_load(run.exports["inventory"][0])["all"]["vars"])


def _ingress_rules(run: Run, cloud: str) -> list[tuple[str, int, str | None, str | None]]:
    """(group role, port, source CIDR, source group role) of every ingress rule."""
    if cloud == "aws":
        role = {r.id: r.props["tags"]["ai-assistant:role"] for r in run.of("aws:ec2/securityGroup:SecurityGroup")}
        return [
            (
                role[p["securityGroupId"]],
                int(p["fromPort"]),
                p.get("cidrIpv4") or p.get("cidrIpv6"),
                role.get(p.get("referencedSecurityGroupId") or ""),
            )
            for p in (r.props for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"))
        ]
    role = {r.id: r.props["tags"]["ai-assistant:role"] for r in run.of("alicloud:ecs/securityGroup:SecurityGroup")}
    return [
        (
            role[p["securityGroupId"]],
            int(p["portRange"].split("/")[0]),
            p.get("cidrIp"),
            role.get(p.get("sourceSecurityGroupId") or ""),
        )
        for p in (r.props for r in run.of("alicloud:ecs/securityGroupRule:SecurityGroupRule"))
        if p["type"] == "ingress"
    ]


def _https_sources_at_first_boot(user_data: str) -> list[str]:
    """The CIDRs cloud-init's baseline ruleset (in this #cloud-config) lets reach 443."""
    text = user_data
    return [c.strip() for m in re.findall(r"ip saddr \{ ([^}]*) \} tcp dport 443 accept", text) for c in m.split(",")]


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_egress_only_stack_has_no_load_balancer_and_no_443_from_outside(cloud: str, tier: str) -> None:
    run = egress_only_run(cloud, tier)
    assert [r.typ for r in run.resources if r.typ.startswith(LB_TYPES)] == []
    rules = _ingress_rules(run, cloud)
    assert "lb" not in {rule[0] for rule in rules}, "no security group for a load balancer that does not exist"
    # 443 only on the assistant hosts, and only from the monitoring (data) hosts' group: Alertmanager's private path.
    assert sorted({rule for rule in rules if rule[1] == 443}) == [("assistant", 443, None, "data")]
    # Nothing at all from a CIDR but SSH to the bastion from the admin networks.
    assert {(g, port) for g, port, cidr, _ in rules if cidr} == {("bastion", 22)}
    public_subnets = _inventory_vars(run)["firewall_admin_cidrs"]  # SSH comes from the bastion's public subnets
    assistants = [r for r in run.of(INSTANCE[cloud]) if r.props["tags"]["ai-assistant:role"] == "assistant"]
    assert assistants
    for r in assistants:
        assert not set(_https_sources_at_first_boot(str(r.props["userData"]))) & set(public_subnets), r.name


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_egress_only_hand_off_closes_the_firewall_and_exports_no_url(cloud: str, tier: str) -> None:
    run = egress_only_run(cloud, tier)
    v = _inventory_vars(run)
    assert (v["firewall_ingress"], v["firewall_lb_cidrs"], v["reverse_proxy_real_ip_from"]) == ("none", [], [])
    assert run.exports["ingress"] == ("none", False)
    assert "loadBalancer" not in run.exports and "url" not in run.exports
    assert run.exports["egressIps"][0], "the platforms' allow-lists still need the NAT addresses"


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_egress_only_stack_passes_the_policy_pack(cloud: str, tier: str) -> None:
    from tests.infra.test_policy import stack_violations

    assert stack_violations(egress_only_run(cloud, tier)) == []


@pytest.mark.parametrize("cloud", CLOUDS)
def test_egress_only_scaling_groups_join_no_load_balancer(cloud: str) -> None:
    run = egress_only_run(cloud, "standard", autoscaling=True)
    assert [r.typ for r in run.resources if r.typ.startswith(LB_TYPES)] == []
    if cloud == "aws":
        groups = run.of("aws:autoscaling/group:Group")
        assert groups and all(not g.props.get("targetGroupArns") for g in groups)
        # With no load balancer to ask, a group must not wait for ELB health that never comes.
        assert {g.props["healthCheckType"] for g in groups} == {"EC2"}
        public_subnets = _inventory_vars(run)["firewall_admin_cidrs"]
        for t in run.of("aws:ec2/launchTemplate:LaunchTemplate"):
            sources = _https_sources_at_first_boot(base64.b64decode(t.props["userData"]).decode())
            assert sources and not set(sources) & set(public_subnets), t.name  # the private subnets only
    else:
        groups = run.of("alicloud:ess/scalingGroup:ScalingGroup")
        assert groups and all(not g.props.get("albServerGroups") for g in groups)
    assert sorted({rule for rule in _ingress_rules(run, cloud) if rule[1] == 443}) == [("assistant", 443, None, "data")]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_public_stack_hands_over_firewall_ingress_public(stack_run: Any, cloud: str) -> None:
    run = stack_run(cloud, "basic")
    v = _inventory_vars(run)
    assert v["firewall_ingress"] == "public"
    assert v["firewall_lb_cidrs"] == v["firewall_admin_cidrs"] and v["firewall_lb_cidrs"]  # the LB's public subnets
    assert run.exports["ingress"] == ("public", False) and "loadBalancer" in run.exports


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown ingress", {"ingress": "private"}, "ai-assistant:ingress: unknown value 'private' (expected one of"),
    (
        "a webhook connector",
        {"connectors": {**STREAM_CONNECTORS, "ops": {"platform": "feishu"}}},
        "ai-assistant:connectors.ops.mode: 'webhook' with ingress none; an egress-only stack needs every connector",
    ),
    (
        "a platform without stream mode",
        {"connectors": {"hook": {"platform": "generic_im", "mode": "stream"}}},
        "ai-assistant:connectors.hook.platform: generic_im has no stream mode, so it needs ingress public",
    ),
    (
        "IM source ranges",
        {"imSourceCidrs": ["149.154.160.0/20"]},
        "ai-assistant:imSourceCidrs: only used with ingress public",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_egress_only_config_fails_with_one_line_before_any_resource(
    case: str, overrides: dict[str, Any], message: str
) -> None:
    run = Run()
    with pytest.raises(ConfigError) as exc:
        run_program(config_for("aws", "basic", {**EGRESS_ONLY, **overrides}), run=run)
    text = str(exc.value)
    assert message in text, f"{case}: got {text!r}"
    assert "\n" not in text
    assert run.resources == []


def test_public_ingress_still_needs_a_certificate() -> None:
    with pytest.raises(ConfigError, match="ai-assistant:certificateId: required"):
        run_program(config_for("aws", "basic", {**EGRESS_ONLY, "ingress": "public", "connectors": None}))
