"""Where the load balancer sends requests, read from the resources a mocked `pulumi up` declared.

A stand-in for the cloud's load balancer (none can run here), applying the documented behaviour to what the
program declares:
- the listener's forward action (AWS) or the catch-all rule (Alibaba Cloud) splits requests between groups by weight
  (docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetGroupTuple.html;
  alibabacloud.com/help/en/slb/application-load-balancer/developer-reference/api-alb-2020-06-16-createrule);
- inside a group requests go to the healthy members only, in proportion to their weight (AWS: no weights, every
  healthy target the same share with cross-zone load balancing; Alibaba Cloud: weighted round robin, and a server
  of weight 0 is neither checked nor used)
  (docs.aws.amazon.com/elasticloadbalancing/latest/application/disable-cross-zone.html;
  alibabacloud.com/help/en/slb/application-load-balancer/user-guide/alb-health-check);
- a group with no healthy member fails open: its share goes to its unhealthy members, which is lost traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.infra.harness import Run

AWS_TG = "aws:lb/targetGroup:TargetGroup"
ALI_SG = "alicloud:alb/serverGroup:ServerGroup"
INSTANCE = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}


@dataclass(frozen=True)
class Member:
    zone: str
    weight: float


@dataclass
class Routing:
    served: dict[tuple[str, str], float]  # (colour, zone) -> percent of all requests answered by healthy hosts
    lost: float  # percent sent to unhealthy hosts (a group failing open) or to a group without members


def _forward(run: Run, cloud: str) -> dict[str, tuple[str, float]]:
    """Group id -> (colour, weight) from the listener (AWS) or the weighted rule (Alibaba Cloud)."""
    if cloud == "aws":
        groups = {f"arn:aws:mock:::{r.name}": r for r in run.of(AWS_TG)}
        listener = run.of("aws:lb/listener:Listener")[0].props
        tuples = listener["defaultActions"][0]["forward"]["targetGroups"]
        return {
            groups[t["arn"]].id: (groups[t["arn"]].props["tags"]["ai-assistant:color"], t["weight"]) for t in tuples
        }
    groups_by_id = {r.id: r for r in run.of(ALI_SG)}
    rule = run.of("alicloud:alb/rule:Rule")[0].props
    tuples = rule["ruleActions"][0]["forwardGroupConfig"]["serverGroupTuples"]
    return {
        t["serverGroupId"]: (groups_by_id[t["serverGroupId"]].props["tags"]["ai-assistant:color"], t["weight"])
        for t in tuples
    }


def members(run: Run, cloud: str) -> dict[str, list[Member]]:
    """Group id -> the hosts it sends to: fixed hosts attached by the program, and each scaling group's minimum."""
    zone_of = {r.id: r.props["tags"].get("ai-assistant:zone") for r in run.of(INSTANCE[cloud])}
    out: dict[str, list[Member]] = {}
    if cloud == "aws":
        arn_to_id = {f"arn:aws:mock:::{r.name}": r.id for r in run.of(AWS_TG)}
        for a in run.of("aws:lb/targetGroupAttachment:TargetGroupAttachment"):
            out.setdefault(arn_to_id[a.props["targetGroupArn"]], []).append(Member(zone_of[a.props["targetId"]], 1))
        for g in run.of("aws:autoscaling/group:Group"):
            zone = next(t["value"] for t in g.props["tags"] if t["key"] == "ai-assistant:zone")
            for arn in g.props.get("targetGroupArns") or []:
                out.setdefault(arn_to_id[arn], []).extend(Member(zone, 1) for _ in range(int(g.props["minSize"])))
        return out
    for sg in run.of(ALI_SG):
        for s in sg.props.get("servers") or []:
            out.setdefault(sg.id, []).append(Member(zone_of[s["serverId"]], float(s["weight"])))
    for g in run.of("alicloud:ess/scalingGroup:ScalingGroup"):
        zone = g.props["tags"]["ai-assistant:zone"]
        for attach in g.props.get("albServerGroups") or []:
            out.setdefault(attach["albServerGroupId"], []).extend(
                Member(zone, float(attach["weight"])) for _ in range(int(g.props["minSize"]))
            )
    return out


def route(run: Run, cloud: str, dead: frozenset[str] = frozenset()) -> Routing:
    """Shares of all requests while the hosts of the zones in `dead` fail their health checks."""
    forward = _forward(run, cloud)
    total = sum(float(w) for _, w in forward.values())
    by_group = members(run, cloud)
    served: dict[tuple[str, str], float] = {}
    lost = 0.0
    for gid, (colour, weight) in forward.items():
        share = 100 * float(weight) / total
        if share == 0:
            continue
        in_use = [m for m in by_group.get(gid, []) if m.weight > 0]
        healthy = [m for m in in_use if m.zone not in dead]
        if not healthy:
            lost += share
            continue
        sum_w = sum(m.weight for m in healthy)
        for m in healthy:
            served[(colour, m.zone)] = served.get((colour, m.zone), 0.0) + share * m.weight / sum_w
    return Routing({k: round(v, 6) for k, v in served.items()}, round(lost, 6))
