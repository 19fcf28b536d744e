"""Zone failover by health (docs/adr/0038-zone-failover-by-health.md), under Pulumi mocks for every cloud x tier.

What makes it automatic is declared, not done: one group per colour holding both zones' hosts, health checks on,
cross-zone load balancing (AWS) or weighted round robin over positively weighted servers (Alibaba Cloud). These tests
read those properties, then apply the load balancers' documented behaviour (tests/infra/routing.py, a stand-in for
the cloud) to the declared groups: where requests go while both zones are healthy and while one zone is not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import alicloud_stack, aws_stack
from infra.config import ConfigError
from infra.deployment import ALARM_PERIOD_S, ALARM_PERIODS, ALARM_PREFIX
from infra.tiers import CATALOGUE
from tests.infra.conftest import CASES
from tests.infra.harness import Res, Run, config_for, run_program
from tests.infra.routing import ALI_SG, AWS_TG, INSTANCE, members, route
from tests.infra.test_provider_rules import RULES

Get = Callable[[str, str], Run]
REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs/runbooks/zone-failover.md"
CLOUDS = ("aws", "alicloud")
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
# Both zones healthy: Alibaba Cloud weighs the zones 100 - standbyWeight / standbyWeight; an AWS target group cannot
# weigh targets, so each zone serves its hosts' share (as many hosts in each zone: even).
SPLIT = {"aws": (50, 50), "alicloud": (80, 20)}


def _zones(cloud: str) -> list[str]:
    return list(config_for(cloud, "basic")["zones"])


def _run(stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool) -> Run:
    return (scaled_run if autoscaling else stack_run)(cloud, tier)


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_one_health_checked_group_per_colour_holds_both_zones(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = _run(stack_run, scaled_run, cloud, tier, autoscaling)
    groups = run.of(AWS_TG if cloud == "aws" else ALI_SG)
    assert sorted(g.props["tags"]["ai-assistant:color"] for g in groups) == ["blue", "green"]
    by_group = members(run, cloud)
    blue = next(g for g in groups if g.props["tags"]["ai-assistant:color"] == "blue")
    assert {m.zone for m in by_group[blue.id] if m.weight > 0} == set(_zones(cloud))
    for g in groups:
        p = g.props
        if cloud == "aws":
            # Every ALB node sends to the healthy targets of both zones; the group fails open only when no target
            # in either zone is healthy.
            assert p["loadBalancingCrossZoneEnabled"] == "true", g.name
            hc = p["healthCheck"]
            assert (hc["enabled"], hc["path"], hc["protocol"]) == (True, "/healthz", "HTTPS"), g.name
            assert (hc["interval"], hc["unhealthyThreshold"]) == (15, 3), g.name
        else:
            assert p["scheduler"] == "Wrr", g.name
            hc = p["healthCheckConfig"]
            assert (hc["healthCheckEnabled"], hc["healthCheckPath"]) == (True, "/healthz"), g.name
            assert (hc["healthCheckInterval"], hc["unhealthyThreshold"]) == (15, 3), g.name
    if cloud == "aws" and autoscaling:
        # The scaling groups replace what the load balancer finds unhealthy, in both zones.
        assert {g.props["healthCheckType"] for g in run.of("aws:autoscaling/group:Group")} == {"ELB"}


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_normal_operation_keeps_the_configured_split(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = _run(stack_run, scaled_run, cloud, tier, autoscaling)
    z = _zones(cloud)
    a, b = SPLIT[cloud]
    routing = route(run, cloud)
    assert routing.served == {("blue", z[0]): a, ("blue", z[1]): b}
    assert routing.lost == 0
    exported = run.exports["trafficWeights"][0]
    assert {k: v for k, v in exported.items() if v} == {f"blue/{z[0]}": a, f"blue/{z[1]}": b}


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_a_zone_without_healthy_hosts_loses_its_traffic_to_the_other_by_itself(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = _run(stack_run, scaled_run, cloud, tier, autoscaling)
    z = _zones(cloud)
    primary_down = route(run, cloud, dead=frozenset({z[0]}))
    assert primary_down.served == {("blue", z[1]): 100} and primary_down.lost == 0
    standby_down = route(run, cloud, dead=frozenset({z[1]}))
    assert standby_down.served == {("blue", z[0]): 100} and standby_down.lost == 0
    # Both zones down: the group fails open and nothing serves; the model does not invent capacity.
    assert route(run, cloud, dead=frozenset(z)).lost == 100


def test_the_model_sees_a_group_per_zone_fail_open() -> None:
    """The routing stand-in must be able to fail: split a colour into per-zone groups behind weights (the layout
    before ADR 0038) and the primary zone's share is lost when its hosts are down."""
    run = run_program(config_for("alicloud", "basic"))
    z = _zones("alicloud")
    [blue] = [g for g in run.of(ALI_SG) if g.props["tags"]["ai-assistant:color"] == "blue"]
    [rule] = run.of("alicloud:alb/rule:Rule")
    servers = blue.inputs["servers"]
    zone_of = {r.id: r.props["tags"].get("ai-assistant:zone") for r in run.of(INSTANCE["alicloud"])}
    per_zone = []
    for zone, weight in zip(z, (80, 20), strict=True):
        mine = [dict(s, weight=100) for s in servers if zone_of[s["serverId"]] == zone]
        group = Res(ALI_SG, f"blue-{zone}", f"blue-{zone}-id", {**blue.inputs, "servers": mine}, {})
        run.resources.append(group)
        per_zone.append({"serverGroupId": group.id, "weight": weight})
    run.resources.remove(blue)
    rule.inputs["ruleActions"][0]["forwardGroupConfig"]["serverGroupTuples"] = per_zone
    assert route(run, "alicloud", dead=frozenset({z[0]})).lost == 80


@pytest.mark.parametrize("cloud", CLOUDS)
def test_blue_green_weights_still_work(cloud: str) -> None:
    z = _zones(cloud)
    a, b = SPLIT[cloud]
    canary = run_program(config_for(cloud, "basic", deployColors=["blue", "green"], canaryWeight=10))
    assert route(canary, cloud).served == {
        ("blue", z[0]): 90 * a / 100,
        ("blue", z[1]): 90 * b / 100,
        ("green", z[0]): 10 * a / 100,
        ("green", z[1]): 10 * b / 100,
    }
    # Each colour's share moves to the standby zone on its own.
    assert route(canary, cloud, dead=frozenset({z[0]})).served == {("blue", z[1]): 90, ("green", z[1]): 10}
    switched = run_program(config_for(cloud, "basic", deployColors=["blue", "green"], activeColor="green"))
    assert route(switched, cloud).served == {("green", z[0]): a, ("green", z[1]): b}
    assert route(switched, cloud, dead=frozenset({z[0]})).served == {("green", z[1]): 100}
    retired = run_program(config_for(cloud, "basic", deployColors=["green"], activeColor="green"))
    assert route(retired, cloud).served == {("green", z[0]): a, ("green", z[1]): b}


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize("cloud", CLOUDS)
def test_failover_switch_drains_the_primary_zone_on_purpose(cloud: str, autoscaling: bool) -> None:
    z = _zones(cloud)
    run = run_program(config_for(cloud, "standard", failover=True, autoscaling=autoscaling))
    assert route(run, cloud).served == {("blue", z[1]): 100}
    # Drained, not destroyed: the primary zone's hosts (or scaling groups) stay, ready for the move back.
    if autoscaling:
        scaling = "aws:autoscaling/group:Group" if cloud == "aws" else "alicloud:ess/scalingGroup:ScalingGroup"
        assert len(run.of(scaling)) == 2
    else:
        hosts = [r for r in run.of(INSTANCE[cloud]) if r.props["tags"].get("ai-assistant:role") == "assistant"]
        assert {h.props["tags"]["ai-assistant:zone"] for h in hosts} == set(z)
    assert run.exports["trafficWeights"][0] == {f"blue/{z[0]}": 0, f"blue/{z[1]}": 100, **_no_green(z)}


def _no_green(z: list[str]) -> dict[str, int]:
    return {f"green/{z[0]}": 0, f"green/{z[1]}": 0}


def test_standby_weight_sets_the_alicloud_split() -> None:
    z = _zones("alicloud")
    run = run_program(config_for("alicloud", "basic", standbyWeight=35))
    assert route(run, "alicloud").served == {("blue", z[0]): 65, ("blue", z[1]): 35}
    scaled = run_program(config_for("alicloud", "basic", standbyWeight=35, autoscaling=True))
    assert route(scaled, "alicloud").served == {("blue", z[0]): 65, ("blue", z[1]): 35}


@pytest.mark.parametrize(
    ("cloud", "value", "message"),
    [
        ("alicloud", 0, "ai-assistant:standbyWeight: 0 leaves the standby zone's servers unchecked and unused"),
        ("alicloud", 80, "ai-assistant:standbyWeight: 80 is out of range (0..50)"),
        ("alicloud", "lots", "ai-assistant:standbyWeight: 'lots' is not an integer"),
        ("aws", 20, "ai-assistant:standbyWeight: not used on AWS: a target group cannot weigh its targets"),
    ],
)
def test_standby_weight_errors_name_the_key(cloud: str, value: object, message: str) -> None:
    run = Run()
    with pytest.raises(ConfigError) as exc:
        run_program(config_for(cloud, "basic", standbyWeight=value), run=run)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert run.resources == []


# ------------------------------------------------------------------------- alerts that outlive the primary zone


@pytest.mark.parametrize("tier", ["basic", "standard", "enterprise"])
def test_aws_alarms_on_a_zone_without_healthy_hosts_outside_the_zone(stack_run: Get, tier: str) -> None:
    run = stack_run("aws", tier)
    z = _zones("aws")
    alarms = run.of(ALARM)
    assert sorted(a.props["dimensions"]["AvailabilityZone"] for a in alarms) == sorted(z)
    [topic] = run.of("aws:sns/topic:Topic")
    topic_arn = f"arn:aws:mock:::{topic.name}"
    tgs = {r.props["tags"]["ai-assistant:color"]: r for r in run.of(AWS_TG)}
    for a in alarms:
        p = a.props
        assert (p["namespace"], p["metricName"], p["statistic"]) == (
            "AWS/ApplicationELB",
            "HealthyHostCount",
            "Minimum",
        )
        assert (p["comparisonOperator"], p["threshold"]) == ("LessThanThreshold", 1)
        assert p["dimensions"]["TargetGroup"] == f"targetgroup/{tgs['blue'].name}/0123456789abcdef"
        assert p["dimensions"]["LoadBalancer"].startswith("app/")
        assert p["alarmActions"] == [topic_arn] and p["okActions"] == [topic_arn]
        assert p["name"].startswith(ALARM_PREFIX)
    [sub] = run.of("aws:sns/topicSubscription:TopicSubscription")
    assert (sub.props["protocol"], sub.props["endpoint"]) == ("email", "ops@example.com")


def test_aws_alarms_follow_colours_and_the_drain() -> None:
    z = _zones("aws")
    both = run_program(config_for("aws", "basic", deployColors=["blue", "green"]))
    assert sorted(
        (a.props["tags"]["ai-assistant:color"], a.props["dimensions"]["AvailabilityZone"]) for a in both.of(ALARM)
    ) == [
        ("blue", z[0]),
        ("blue", z[1]),
        ("green", z[0]),
        ("green", z[1]),
    ]
    drained = run_program(config_for("aws", "basic", failover=True))
    assert [a.props["dimensions"]["AvailabilityZone"] for a in drained.of(ALARM)] == [z[1]]
    no_lb = run_program(config_for("aws", "basic", ingress="none"))
    assert no_lb.of(ALARM) == [] and no_lb.of("aws:sns/topic:Topic") == []


CMS_ALARM = "alicloud:cms/alarm:Alarm"
CMS_CONTACT = "alicloud:cms/alarmContact:AlarmContact"
CMS_GROUP = "alicloud:cms/alarmContactGroup:AlarmContactGroup"


def _ali_alarms(run: Run) -> dict[str, Res]:
    return {a.props["tags"]["ai-assistant:color"]: a for a in run.of(CMS_ALARM)}


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize("tier", ["basic", "standard", "enterprise"])
def test_alicloud_alarms_on_a_colour_with_a_zone_of_unhealthy_hosts(
    stack_run: Get, scaled_run: Get, tier: str, autoscaling: bool
) -> None:
    """The ALB counts healthy servers per server group, not per zone: one rule per colour, firing when the colour's
    group has no more healthy hosts than one zone holds, for the same periods as AWS's alarms."""
    run = _run(stack_run, scaled_run, "alicloud", tier, autoscaling)
    alarms = _ali_alarms(run)
    assert sorted(alarms) == ["blue"]
    [group] = run.of(CMS_GROUP)
    [contact] = run.of(CMS_CONTACT)
    assert (contact.props["channelsMail"], contact.props["lang"]) == ("ops@example.com", "en")
    assert group.props["contacts"] == [contact.props["alarmContactName"]]
    [alb] = run.of("alicloud:alb/loadBalancer:LoadBalancer")
    server_groups = {g.props["tags"]["ai-assistant:color"]: g for g in run.of(ALI_SG)}
    per_zone = CATALOGUE[tier].assistant_per_zone
    p = alarms["blue"].props
    assert (p["project"], p["metric"]) == ("acs_alb", "ServerGroupHealthyHostCount")
    assert p["escalationsCritical"] == {
        "statistics": "Value",
        "comparisonOperator": "<",
        "threshold": str(per_zone + 1),
        "times": ALARM_PERIODS,
    }
    assert p["period"] == ALARM_PERIOD_S
    assert json.loads(p["metricDimensions"]) == [
        {
            "loadBalancerId": alb.id,
            "listenerProtocol": "HTTPS",
            "listenerPort": "443",
            "serverGroupId": server_groups["blue"].id,
        }
    ]
    assert p["contactGroups"] == [group.props["alarmContactGroupName"]]
    assert p["name"] == f"{ALARM_PREFIX}test-blue"
    assert p["tags"]["ai-assistant:stack"] == "test"


def test_alicloud_alarms_follow_colours_the_drain_and_the_receivers() -> None:
    both = run_program(config_for("alicloud", "enterprise", deployColors=["blue", "green"]))
    server_groups = {g.id: g.props["tags"]["ai-assistant:color"] for g in both.of(ALI_SG)}
    alarms = _ali_alarms(both)
    assert sorted(alarms) == ["blue", "green"]
    for color, a in alarms.items():
        assert server_groups[json.loads(a.props["metricDimensions"])[0]["serverGroupId"]] == color
    # failover: true: the standby zone alone is in rotation, so no healthy host at all is what pages (as on AWS).
    drained = run_program(config_for("alicloud", "enterprise", failover=True))
    assert _ali_alarms(drained)["blue"].props["escalationsCritical"]["threshold"] == "1"
    no_lb = run_program(config_for("alicloud", "basic", ingress="none"))
    assert no_lb.of(CMS_ALARM) == [] and no_lb.of(CMS_GROUP) == [] and no_lb.of(CMS_CONTACT) == []
    # A rule needs a contact group and the group a contact: no e-mail receiver, nothing to send to (webhooks are
    # Alertmanager's, docs/infra.md).
    webhook_only = [{"name": "ops", "webhook": "https://hooks.example.com/ops"}]
    for receivers in (webhook_only, []):
        quiet = run_program(config_for("alicloud", "basic", alertReceivers=receivers))
        assert quiet.of(CMS_ALARM) == [] and quiet.of(CMS_GROUP) == [] and quiet.of(CMS_CONTACT) == []
    three = [
        {"name": "ops", "email": "ops@example.com"},
        {"name": "on call", "email": "oncall@example.com"},
        {"name": "on/call", "email": "oncall2@example.com"},
    ]
    run = run_program(config_for("alicloud", "basic", alertReceivers=three))
    contacts = sorted((c.props["alarmContactName"], c.props["channelsMail"]) for c in run.of(CMS_CONTACT))
    assert contacts == [
        ("test-on-call", "oncall@example.com"),
        ("test-on-call-2", "oncall2@example.com"),
        ("test-ops", "ops@example.com"),
    ]
    [group] = run.of(CMS_GROUP)
    assert sorted(group.props["contacts"]) == ["test-on-call", "test-on-call-2", "test-ops"]


def test_alicloud_contact_names_carry_the_stack_and_fit() -> None:
    assert alicloud_stack.cms_name("prod", "ops team") == "prod-ops-team"
    long = alicloud_stack.cms_name("a-very-long-production-stack-name", "the on-call rotation")
    assert len(long) == 40 and long.startswith("a-very-long-production-stack-name"[:31])
    assert long != alicloud_stack.cms_name("a-very-long-production-stack-name", "the on-call rotation 2")


# ----------------------------------------------------------------------------- the runbook states what runs


def test_the_runbook_states_the_declared_detection_time() -> None:
    """The runbook's "how long until traffic moves" must be the health checks the program declares."""
    text = RUNBOOK.read_text()
    for mod in (aws_stack, alicloud_stack):
        interval, threshold = mod.HEALTH_INTERVAL_S, mod.UNHEALTHY_THRESHOLD
        assert f"{threshold} × {interval} s" in text, f"{mod.__name__}: {threshold} x {interval} s not in the runbook"
    assert ALARM_PREFIX in text
    for pattern in (
        r"describe-target-health",
        r"ListServerGroupServers",
        r"describe-alarms",
        r"DescribeMetricRuleList",
    ):
        assert re.search(pattern, text), pattern


# ------------------------------------------------------------------- provider rules for the new arguments


@pytest.mark.parametrize(
    ("typ", "inputs", "needle"),
    [
        (AWS_TG, {"loadBalancingCrossZoneEnabled": "on"}, "loadBalancingCrossZoneEnabled"),
        (ALI_SG, {"serverGroupName": "assistant-blue", "scheduler": "wrr"}, "scheduler"),
        (ALARM, {"period": 60, "evaluationPeriods": 2, "comparisonOperator": "Below"}, "comparisonOperator"),
        (ALARM, {"period": 60, "comparisonOperator": "LessThanThreshold", "treatMissingData": "zero"}, "treatMissing"),
        (CMS_ALARM, {"project": "acs_alb", "escalationsCritical": {"statistics": "Minimum"}}, "statistics"),
        (CMS_ALARM, {"metricDimensions": '{"serverGroupId": "sgp-1"}'}, "metricDimensions"),
    ],
)
def test_provider_rules_reject_bad_failover_arguments(typ: str, inputs: dict[str, object], needle: str) -> None:
    broken = Res(typ, "x", "x-id", inputs, {})
    found = [m for rule in RULES if typ in rule.types for m in rule.check(broken, None)]
    assert any(needle in m for m in found), found
