"""What a cloud module hands back to the composition: hosts for the inventory and the addresses to export."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from infra.inventory import Host

# Ports the security groups open between tiers, named once (the roles listen on them).
HTTPS = 443
SSH = 22
REDIS = 6379
WEAVIATE_HTTP = 8082  # roles/weaviate: weaviate_port, the link_tls port in front of it
WEAVIATE_GRPC = 50051  # the data host's link_tls in front of Weaviate's own gRPC port (playbooks/group_vars/all.yml)
MODEL_SERVER = 8089  # roles/model_server: model_server_port (also its /metrics)
NODE_EXPORTER = 9100
JOURNAL_REMOTE = 19532  # roles/journal_remote: journal_remote_port (every host's journal to the monitoring host)
ASSISTANT_METRICS = 9464  # roles/assistant: assistant_metrics_port
# The green slot's metrics (assistant_green_metrics_port): Prometheus scrapes both colours of every host
# (playbooks/monitoring.yml), so the monitoring host must reach both while green serves.
ASSISTANT_GREEN_METRICS = 9465

# The zone alarms of both clouds (aws_stack.ZoneAlarms, alicloud_stack.ZoneAlarms). A zone counts as lost for routing
# after UNHEALTHY_THRESHOLD failed checks; the alarm waits two more minutes of too few healthy hosts so that a rolling
# restart of one host does not page.
ALARM_PERIOD_S = 60
ALARM_PERIODS = 2
# Every zone alarm's name starts with this and the stack's name: `aws cloudwatch describe-alarms --alarm-name-prefix`
# and `aliyun cms DescribeMetricRuleList --RuleName` (a fuzzy match) list them (runbook: zone-failover.md).
ALARM_PREFIX = "ai-assistant-no-healthy-host-"


@dataclass
class RedisEndpoint:
    host: pulumi.Output[str]
    port: int
    user: str
    tls: bool


@dataclass
class Deployment:
    hosts: list[Host]
    lb_address: pulumi.Output[str] | None  # None: egress-only (ingress none), no load balancer
    egress_ip: pulumi.Output[str]
    bastion_ip: pulumi.Output[str] | None
    backup_bucket: pulumi.Output[str]
    backup_replica_bucket: pulumi.Output[str]
    public_cidrs: list[str]  # load balancer, NAT and bastion subnets
    private_cidrs: list[str]  # instance subnets
    # With autoscaling, assistant hosts come and go: Ansible finds them through a dynamic inventory source.
    dynamic_inventory: pulumi.Output[str] | None = None
    # How many hosts that source lists once every scaling group reached its minimum: the hand-off waits for them.
    dynamic_hosts: int = 0
    ready: list[pulumi.Resource] = field(default_factory=list)  # what the hand-off waits for
    # Every zone's NAT address (the first is egress_ip): the IM platforms' allow-lists need all of them.
    egress_ips: list[pulumi.Output[str]] = field(default_factory=list)
    # The one Redis every assistant host in both zones uses (managed, with a standby in the second zone).
    redis: RedisEndpoint | None = None
    # The bastion's SSH host public key when Pulumi generated it (cloud-init installs it); None: unknown.
    bastion_host_key: pulumi.Output[str] | None = None


def zone_suffix(zone: str) -> str:
    """us-east-1a -> a, cn-hangzhou-h -> h: short, stable names for resources and hosts."""
    return zone.rsplit("-", 1)[-1][-1:] if "-" in zone else zone[-1:]
