"""Alibaba Cloud: VPC over two zones, security groups, ECS hosts, the weighted blue/green ALB and OSS backups."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from typing import Any

import pulumi
import pulumi_alicloud as ali

from infra import cloudinit
from infra.config import COLORS, Color, InfraConfig, color_weights, zone_weights
from infra.deployment import (
    ALARM_PERIOD_S,
    ALARM_PERIODS,
    ALARM_PREFIX,
    ASSISTANT_GREEN_METRICS,
    ASSISTANT_METRICS,
    HTTPS,
    JOURNAL_REMOTE,
    MODEL_SERVER,
    NODE_EXPORTER,
    REDIS,
    SSH,
    WEAVIATE_GRPC,
    WEAVIATE_HTTP,
    Deployment,
    RedisEndpoint,
    zone_suffix,
)
from infra.inventory import Host
from infra.tiers import CATALOGUE, GPU_DISK_GIB, REDIS_CLASSES, NodeRole, instance_type

WORLD_V4 = "0.0.0.0/0"
SCALE_CPU_TARGET = 60.0  # same target and warm-up as AWS (infra/aws_stack.py)
SCALE_WARMUP_S = 600
TLS_POLICY = "tls_cipher_policy_1_2_strict_with_1_3"


class Network(pulumi.ComponentResource):
    """VPC, a public and a private vSwitch per zone, and an enhanced NAT gateway per zone whose EIP is that zone's
    egress address: each private vSwitch routes through its own zone's NAT (a custom route table per vSwitch), so
    losing a zone does not cut the other's egress (docs/adr/0034-one-state-across-zones.md)."""

    def __init__(
        self, name: str, conf: InfraConfig, tags: dict[str, str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ai-assistant:alicloud:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cidrs = [str(n) for n in list(ipaddress.ip_network(conf.vpc_cidr).subnets(new_prefix=20))[:4]]
        self.public_cidrs, self.private_cidrs = cidrs[0:2], cidrs[2:4]
        self.vpc = ali.vpc.Network(
            f"{name}-vpc", vpc_name=f"{name}-vpc", cidr_block=conf.vpc_cidr, tags=tags, opts=child
        )
        self.public: list[ali.vpc.Switch] = []
        self.private: list[ali.vpc.Switch] = []
        for i, zone in enumerate(conf.zones):
            z = zone_suffix(zone)
            self.public.append(
                ali.vpc.Switch(
                    f"{name}-public-{z}",
                    vpc_id=self.vpc.id,
                    cidr_block=self.public_cidrs[i],
                    zone_id=zone,
                    tags={**tags, "ai-assistant:zone": zone},
                    opts=child,
                )
            )
            self.private.append(
                ali.vpc.Switch(
                    f"{name}-private-{z}",
                    vpc_id=self.vpc.id,
                    cidr_block=self.private_cidrs[i],
                    zone_id=zone,
                    tags={**tags, "ai-assistant:zone": zone},
                    opts=child,
                )
            )
        self.nats: list[ali.vpc.NatGateway] = []
        self.egress_eips: list[ali.ecs.EipAddress] = []
        for i, zone in enumerate(conf.zones):
            z = zone_suffix(zone)
            # The primary zone keeps the single NAT's logical names, so its EIP (on the allow-lists) stays.
            suffix = "" if i == 0 else f"-{z}"
            ztags = {**tags, "ai-assistant:zone": zone}
            nat = ali.vpc.NatGateway(
                f"{name}-nat{suffix}",
                vpc_id=self.vpc.id,
                vswitch_id=self.public[i].id,
                nat_type="Enhanced",
                payment_type="PayAsYouGo",
                internet_charge_type="PayByLcu",
                tags=ztags,
                opts=child,
            )
            eip = ali.ecs.EipAddress(
                f"{name}-egress{suffix}", internet_charge_type="PayByTraffic", bandwidth="100", tags=ztags, opts=child
            )
            assoc = ali.ecs.EipAssociation(
                f"{name}-egress{suffix}", allocation_id=eip.id, instance_id=nat.id, instance_type="Nat", opts=child
            )
            ali.vpc.SnatEntry(
                f"{name}-snat-{z}",
                snat_table_id=nat.snat_table_ids,
                source_vswitch_id=self.private[i].id,
                snat_ip=eip.ip_address,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[assoc]),
            )
            # The system route table can send 0.0.0.0/0 to one NAT only: each private vSwitch gets its own table.
            table = ali.vpc.RouteTable(
                f"{name}-private-{z}",
                vpc_id=self.vpc.id,
                route_table_name=f"{name}-private-{z}",
                associate_type="VSwitch",
                tags=ztags,
                opts=child,
            )
            ali.vpc.RouteTableAttachment(
                f"{name}-private-{z}", route_table_id=table.id, vswitch_id=self.private[i].id, opts=child
            )
            ali.vpc.RouteEntry(
                f"{name}-private-{z}-default",
                route_table_id=table.id,
                destination_cidrblock=WORLD_V4,
                nexthop_type="NatGateway",
                nexthop_id=nat.id,
                opts=child,
            )
            self.nats.append(nat)
            self.egress_eips.append(eip)
        self.nat, self.egress_eip = self.nats[0], self.egress_eips[0]
        self.register_outputs({"vpc_id": self.vpc.id, "egress_ips": [e.ip_address for e in self.egress_eips]})


class SecurityGroups(pulumi.ComponentResource):
    """Same shape as on AWS: 443 to the ALB only; hosts from the ALB's vSwitches; SSH via the bastion."""

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        net: Network,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:alicloud:SecurityGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def group(role: str) -> ali.ecs.SecurityGroup:
            return ali.ecs.SecurityGroup(
                f"{name}-{role}",
                security_group_name=f"{name}-{role}",
                vpc_id=net.vpc.id,
                tags={**tags, "ai-assistant:role": role},
                opts=child,
            )

        # Egress-only (ingress none): no load balancer, so no group for it and nothing on 443 from its vSwitches.
        self.lb = group("lb") if conf.ingress == "public" else None
        self.assistant, self.data = group("assistant"), group("data")
        self.inference, self.bastion = group("inference"), group("bastion")

        def ingress(
            rule: str,
            sg: ali.ecs.SecurityGroup,
            port: int,
            *,
            cidr: str | None = None,
            src: ali.ecs.SecurityGroup | None = None,
        ) -> None:
            ali.ecs.SecurityGroupRule(
                f"{name}-{rule}",
                type="ingress",
                ip_protocol="tcp",
                port_range=f"{port}/{port}",
                security_group_id=sg.id,
                cidr_ip=cidr,
                source_security_group_id=src.id if src is not None else None,
                nic_type="intranet",
                policy="accept",
                description=rule,
                opts=child,
            )

        if self.lb is not None:
            https_sources = list(conf.im_source_cidrs) + list(conf.admin_cidrs) if conf.im_source_cidrs else [WORLD_V4]
            for i, cidr in enumerate(https_sources):
                ingress(f"lb-https-{i}", self.lb, HTTPS, cidr=cidr)
            # ALB reaches backends from addresses in its own vSwitches.
            for i, cidr in enumerate(net.public_cidrs):
                ingress(f"assistant-https-from-lb-{i}", self.assistant, HTTPS, cidr=cidr)
        # Alertmanager -> the assistant's POST /api/alerts: the private path, kept in an egress-only stack too.
        ingress("assistant-https-from-data", self.assistant, HTTPS, src=self.data)
        # Prometheus on the monitoring (data) host scrapes node-exporter everywhere, the assistant and the model server.
        ingress("assistant-node-metrics-from-data", self.assistant, NODE_EXPORTER, src=self.data)
        ingress("assistant-metrics-from-data", self.assistant, ASSISTANT_METRICS, src=self.data)
        ingress("assistant-green-metrics-from-data", self.assistant, ASSISTANT_GREEN_METRICS, src=self.data)
        for port, label in ((REDIS, "redis"), (WEAVIATE_HTTP, "weaviate"), (WEAVIATE_GRPC, "weaviate-grpc")):
            ingress(f"data-{label}-from-assistant", self.data, port, src=self.assistant)
            ingress(f"data-{label}-from-data", self.data, port, src=self.data)
        ingress("data-node-metrics-from-data", self.data, NODE_EXPORTER, src=self.data)
        ingress("inference-from-assistant", self.inference, MODEL_SERVER, src=self.assistant)
        ingress("inference-node-metrics-from-data", self.inference, NODE_EXPORTER, src=self.data)
        ingress("inference-metrics-from-data", self.inference, MODEL_SERVER, src=self.data)
        for sg, role in ((self.assistant, "assistant"), (self.data, "data"), (self.inference, "inference")):
            ingress(f"{role}-ssh-from-bastion", sg, SSH, src=self.bastion)
            # Every host's journal to journal-remote on the monitoring (data) host (playbooks/monitoring.yml).
            ingress(f"data-journal-from-{role}", self.data, JOURNAL_REMOTE, src=sg)
        for i, cidr in enumerate(conf.admin_cidrs):
            ingress(f"bastion-ssh-{i}", self.bastion, SSH, cidr=cidr)
        self.register_outputs({"lb": self.lb.id if self.lb else None, "assistant": self.assistant.id})


class BackupBuckets(pulumi.ComponentResource):
    """Private, versioned, encrypted OSS bucket with lifecycle rules, replicated to the backup region."""

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        replica_provider: ali.Provider,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:alicloud:BackupBuckets", name, None, opts)
        self.bucket = self._bucket(f"{name}-primary", conf, tags, pulumi.ResourceOptions(parent=self))
        self.replica = self._bucket(
            f"{name}-replica", conf, tags, pulumi.ResourceOptions(parent=self, provider=replica_provider)
        )
        ali.oss.BucketReplication(
            f"{name}-replication",
            bucket=self.bucket.bucket,
            action="PUT",  # copy new objects; deletions at home do not reach the off-site copy
            historical_object_replication="enabled",
            destination=ali.oss.BucketReplicationDestinationArgs(
                bucket=self.replica.bucket, location=f"oss-{conf.backup_region}"
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"bucket": self.bucket.bucket, "replica": self.replica.bucket})

    @staticmethod
    def _bucket(name: str, conf: InfraConfig, tags: dict[str, str], opts: pulumi.ResourceOptions) -> ali.oss.Bucket:
        # The last copy after a disaster: protected, and kept when the stack is destroyed (docs/infra.md).
        bucket = ali.oss.Bucket(
            name,
            versioning=ali.oss.BucketVersioningArgs(status="Enabled"),
            tags=tags,
            server_side_encryption_rule=ali.oss.BucketServerSideEncryptionRuleArgs(sse_algorithm="AES256"),
            lifecycle_rules=[
                ali.oss.BucketLifecycleRuleArgs(
                    id="retention",
                    enabled=True,
                    prefix="",
                    # No expiry of current objects: restic's snapshots keep using old data packs (see aws_stack).
                    noncurrent_version_expirations=[
                        ali.oss.BucketLifecycleRuleNoncurrentVersionExpirationArgs(days=conf.backup_retention_days)
                    ],
                    abort_multipart_uploads=[ali.oss.BucketLifecycleRuleAbortMultipartUploadArgs(days=7)],
                )
            ],
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=True, retain_on_delete=True)),
        )
        o = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[bucket]))
        ali.oss.BucketAcl(name, bucket=bucket.bucket, acl="private", opts=o)
        ali.oss.BucketPublicAccessBlock(name, bucket=bucket.bucket, block_public_access=True, opts=o)
        return bucket


# Liveness, not readiness: /readyz includes the model engine and the store, so their outage would mark every host
# unhealthy at once (and an autoscaled group would replace them all for nothing).
HEALTH_PATH = "/healthz"
# How fast a dead zone leaves rotation: a server is unhealthy after UNHEALTHY_THRESHOLD failed checks HEALTH_INTERVAL_S
# apart (each waits up to HEALTH_TIMEOUT_S), about 45-50 s; it serves again after HEALTHY_THRESHOLD good checks (30 s).
HEALTH_INTERVAL_S = 15
HEALTH_TIMEOUT_S = 5
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3


class LoadBalancer(pulumi.ComponentResource):
    """ALB (HTTPS 443) with one server group per colour holding that colour's hosts in both zones, each server
    weighted by its zone (infra/config.py: zone_weights); a catch-all rule weighs the colours.

    Weighted round robin runs over the healthy servers only, so a zone without a healthy host gets nothing and the
    other zone takes all of the colour's traffic by itself (docs/adr/0038-zone-failover-by-health.md). A server group
    per (colour, zone) behind the rule's weights would keep its share: the ALB fails open inside a group whose servers
    are all unhealthy.
    """

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        net: Network,
        groups: SecurityGroups,
        members: dict[tuple[Color, int], list[ali.ecs.Instance]] | None,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """members=None: the assistant hosts belong to scaling groups, which attach and detach them themselves."""
        super().__init__("ai-assistant:alicloud:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Scaling groups add servers the program never declared; without ignore_changes the next `pulumi up
        # --refresh` would see them as drift and remove them from the load balancer.
        group_opts = child if members is not None else pulumi.ResourceOptions(parent=self, ignore_changes=["servers"])
        self.alb = ali.alb.LoadBalancer(
            f"{name}-alb",
            load_balancer_name=f"{name}-alb",
            address_type="Internet",
            load_balancer_edition="Standard",
            load_balancer_billing_config=ali.alb.LoadBalancerLoadBalancerBillingConfigArgs(pay_type="PayAsYouGo"),
            tags=tags,
            vpc_id=net.vpc.id,
            zone_mappings=[
                ali.alb.LoadBalancerZoneMappingArgs(vswitch_id=sw.id, zone_id=zone)
                for sw, zone in zip(net.public, conf.zones, strict=True)
            ],
            opts=child,
        )
        if groups.lb is not None:
            ali.alb.LoadBalancerSecurityGroupAttachment(
                f"{name}-alb-sg", load_balancer_id=self.alb.id, security_group_id=groups.lb.id, opts=child
            )
        self.server_groups: dict[Color, ali.alb.ServerGroup] = {}
        zone_weight = zone_weights(conf)
        for color in COLORS:
            self.server_groups[color] = ali.alb.ServerGroup(
                f"servers-{color}",
                server_group_name=f"assistant-{color}",
                protocol="HTTPS",
                vpc_id=net.vpc.id,
                server_group_type="Instance",
                # Weighted round robin: each server's share follows its weight, among the healthy servers only.
                scheduler="Wrr",
                health_check_config=ali.alb.ServerGroupHealthCheckConfigArgs(
                    health_check_enabled=True,
                    health_check_path=HEALTH_PATH,
                    health_check_protocol="HTTPS",
                    health_check_codes=["http_2xx"],
                    health_check_interval=HEALTH_INTERVAL_S,
                    health_check_timeout=HEALTH_TIMEOUT_S,
                    healthy_threshold=HEALTHY_THRESHOLD,
                    unhealthy_threshold=UNHEALTHY_THRESHOLD,
                ),
                # failover: true gives the primary zone's servers weight 0: the ALB neither checks nor uses them.
                servers=[
                    ali.alb.ServerGroupServerArgs(server_id=i.id, server_type="Ecs", port=HTTPS, weight=zone_weight[zi])
                    for zi in range(len(conf.zones))
                    for i in members.get((color, zi), [])
                ]
                if members is not None
                else None,
                tags={**tags, "ai-assistant:color": color},
                opts=group_opts,
            )
        weights = color_weights(conf)
        listener = ali.alb.Listener(
            f"{name}-https",
            load_balancer_id=self.alb.id,
            listener_port=HTTPS,
            listener_protocol="HTTPS",
            security_policy_id=TLS_POLICY,
            certificates=ali.alb.ListenerCertificatesArgs(certificate_id=str(conf.certificate_id)),
            default_actions=[
                ali.alb.ListenerDefaultActionArgs(
                    type="ForwardGroup",
                    forward_group_config=ali.alb.ListenerDefaultActionForwardGroupConfigArgs(
                        server_group_tuples=[
                            ali.alb.ListenerDefaultActionForwardGroupConfigServerGroupTupleArgs(
                                server_group_id=self.server_groups[conf.active_color].id
                            )
                        ]
                    ),
                )
            ],
            opts=child,
        )
        # The listener's default action cannot carry weights; a catch-all rule in front of it does.
        ali.alb.Rule(
            f"{name}-weighted",
            rule_name="blue-green-weighted",
            listener_id=listener.id,
            priority=1,
            rule_conditions=[
                ali.alb.RuleRuleConditionArgs(
                    type="Path", path_config=ali.alb.RuleRuleConditionPathConfigArgs(values=["/*"])
                )
            ],
            rule_actions=[
                ali.alb.RuleRuleActionArgs(
                    order=1,
                    type="ForwardGroup",
                    forward_group_config=ali.alb.RuleRuleActionForwardGroupConfigArgs(
                        server_group_tuples=[
                            ali.alb.RuleRuleActionForwardGroupConfigServerGroupTupleArgs(
                                server_group_id=sg.id, weight=weights[color]
                            )
                            for color, sg in self.server_groups.items()
                        ]
                    ),
                )
            ],
            opts=child,
        )
        if conf.dns_zone:
            rr = conf.domain.removesuffix(f".{conf.dns_zone}") if conf.domain != conf.dns_zone else "@"
            ali.dns.AlidnsRecord(
                f"{name}-dns",
                domain_name=conf.dns_zone,
                rr=rr,
                type="CNAME",
                value=self.alb.dns_name,
                ttl=600,
                opts=child,
            )
        self.register_outputs({"dns_name": self.alb.dns_name})


# CloudMonitor's ALB metrics (namespace acs_alb), from Alibaba Cloud's list of them
# (https://www.alibabacloud.com/help/en/slb/application-load-balancer/user-guide/alb-monitoring-metrics): backend
# health is counted per instance, listener, forwarding rule and server group, never per zone. The "VIP (zone)"
# metrics have a zone (vip) dimension but count the ALB's own connections, requests and status codes, not the health
# of the servers behind it. ServerGroupHealthyHostCount: "the number of healthy backend servers in the server group",
# dimensions userId, loadBalancerId, listenerProtocol, listenerPort, serverGroupId, statistic Value (the only one an
# alert rule may use for it: PutResourceMetricRule checks Statistics against the metric since 2024-08-15). The rules
# name the server group by every dimension but userId, which is the account the rule belongs to (the API's examples
# leave it out too; not tried on a live account).
ALB_NAMESPACE = "acs_alb"
SERVER_GROUP_HEALTHY = "ServerGroupHealthyHostCount"
ALB_STATISTIC = "Value"
CMS_CONTACT_NAME_MAX = 40  # pulumi_alicloud cms.AlarmContact: alarm_contact_name "between 2 and 40 characters"


def cms_name(*parts: str, limit: int = CMS_CONTACT_NAME_MAX) -> str:
    """A CloudMonitor contact (group) name: contacts and contact groups are per account, not per stack, so the name
    carries the stack's; letters, digits, . _ - only, and a digest of the full name where it would be too long."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-")
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class ZoneAlarms(pulumi.ComponentResource):
    """CloudMonitor alert rules that outlive either zone: per deployed colour, "a zone's worth of the colour's hosts
    is not healthy", sent by e-mail to every alertReceivers address (a CloudMonitor contact each, in one contact
    group) when it fires, then at most once per silence time (the provider's default, a day) while it stays firing.
    Prometheus and Alertmanager run in the primary zone and go down with it; CloudMonitor does not
    (docs/adr/0038-zone-failover-by-health.md).

    Per colour, not per colour and zone as on AWS: the ALB reports its servers' health per server group and no finer
    (ALB_NAMESPACE above), and the colour's one server group holds both zones' hosts (that is what fails over). So the
    rule fires when the group's healthy hosts fall to what one zone holds (assistant_per_zone) or fewer while both
    zones are in rotation, and below 1 while `failover: true` leaves the standby zone alone in it: with the tiers'
    one host per zone that is exactly "a zone has no healthy host"; with two it also fires for one host down in each
    zone. It cannot say which zone, and it misses a zone loss while the other zone's scaling groups run above their
    minimum; ListServerGroupServers does say (runbook: docs/runbooks/zone-failover.md).

    Only with an e-mail receiver: an alert rule needs a contact group, a contact group a contact. Each address gets
    an activation mail first and receives alerts only once it is activated (PutContact, Channels.Mail).
    """

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        stack: str,
        lb: LoadBalancer,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:alicloud:ZoneAlarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.contacts: list[ali.cms.AlarmContact] = []
        names: set[str] = set()
        for i, receiver in enumerate(r for r in conf.alert_receivers if r.email):
            contact_name = cms_name(stack, receiver.name)
            if contact_name in names:  # two receivers' names that differ only in the characters cms_name replaces
                contact_name = cms_name(stack, receiver.name, str(i))
            names.add(contact_name)
            self.contacts.append(
                ali.cms.AlarmContact(
                    f"{name}-email-{i}",
                    alarm_contact_name=contact_name,
                    describe=f"ai-assistant {stack}: alertReceivers {receiver.name}",
                    channels_mail=str(receiver.email),
                    lang="en",
                    opts=child,
                )
            )
        self.group = ali.cms.AlarmContactGroup(
            name,
            alarm_contact_group_name=cms_name("ai-assistant", stack, "zone-alarms"),
            contacts=[c.alarm_contact_name for c in self.contacts],
            describe=f"ai-assistant {stack}: zone alarms (docs/runbooks/zone-failover.md)",
            opts=child,
        )
        per_zone = CATALOGUE[conf.tier].assistant_per_zone
        zones_in_rotation = sum(1 for w in zone_weights(conf) if w > 0)
        # Fewer healthy hosts than the other zones in rotation hold, plus one: a zone's worth is not healthy.
        threshold = per_zone * (zones_in_rotation - 1) + 1
        self.alarms: list[ali.cms.Alarm] = []
        for color in conf.deploy_colors:
            dimensions = pulumi.Output.all(lb.alb.id, lb.server_groups[color].id).apply(
                lambda ids: json.dumps(
                    [
                        {
                            "loadBalancerId": ids[0],
                            "listenerProtocol": "HTTPS",
                            "listenerPort": str(HTTPS),
                            "serverGroupId": ids[1],
                        }
                    ]
                )
            )
            self.alarms.append(
                ali.cms.Alarm(
                    f"{name}-{color}",
                    name=f"{ALARM_PREFIX}{stack}-{color}",
                    project=ALB_NAMESPACE,
                    metric=SERVER_GROUP_HEALTHY,
                    metric_dimensions=dimensions,
                    period=ALARM_PERIOD_S,
                    escalations_critical=ali.cms.AlarmEscalationsCriticalArgs(
                        statistics=ALB_STATISTIC,
                        comparison_operator="<",
                        threshold=str(threshold),
                        times=ALARM_PERIODS,
                    ),
                    contact_groups=[self.group.alarm_contact_group_name],
                    tags={**tags, "ai-assistant:color": color},
                    opts=child,
                )
            )
        self.register_outputs({"contact_group": self.group.alarm_contact_group_name})


# The trust policy of every instance role: ECS instances may assume it, nothing else.
ECS_ASSUME_ROLE = json.dumps(
    {
        "Version": "1",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": ["ecs.aliyuncs.com"]}}],
    }
)


def _backup_role(name: str, bucket: ali.oss.Bucket, tags: dict[str, str], opts: pulumi.ResourceOptions) -> ali.ram.Role:
    """RAM role for data hosts: put and get backups in their bucket, nothing else."""
    role = ali.ram.Role(name, role_name=name, assume_role_policy_document=ECS_ASSUME_ROLE, tags=tags, opts=opts)
    policy = ali.ram.Policy(
        name,
        policy_name=name,
        policy_document=bucket.bucket.apply(
            lambda b: json.dumps(
                {
                    "Version": "1",
                    "Statement": [
                        {"Effect": "Allow", "Action": ["oss:ListObjects"], "Resource": [f"acs:oss:*:*:{b}"]},
                        {
                            "Effect": "Allow",
                            "Action": ["oss:PutObject", "oss:GetObject"],
                            "Resource": [f"acs:oss:*:*:{b}/*"],
                        },
                        # The on-boot artifact is code the autoscaled hosts run as root: only the hand-off writes
                        # it (docs/adr/0039). RAM evaluates an explicit Deny before any Allow.
                        {
                            "Effect": "Deny",
                            "Action": ["oss:PutObject"],
                            "Resource": [f"acs:oss:*:*:{b}/{cloudinit.ONBOOT_PREFIX}/*"],
                        },
                    ],
                }
            )
        ),
        opts=opts,
    )
    ali.ram.RolePolicyAttachment(
        name, policy_name=policy.policy_name, policy_type="Custom", role_name=role.role_name, opts=opts
    )
    return role


def onboot_policy(secret_arn: str, bucket: str) -> dict[str, Any]:
    """The autoscaled assistant hosts' RAM role: read their one secret and the artifact prefix, nothing else.

    Actions and resources as RAM documents them: KMS `kms:GetSecretValue` on the secret's ARN
    `acs:kms:${region}:${account}:secret/${secret-name}` (https://www.alibabacloud.com/help/doc-detail/28953.html);
    OSS `oss:GetObject` on `acs:oss:*:*:<bucket>/<prefix>/*` (object resources `acs:oss:{region}:{account}:
    {bucket}/{object}`, wildcards allowed: https://www.alibabacloud.com/help/en/oss/user-guide/how-oss-works-with-ram).
    No oss:ListObjects: a missing object then reads as AccessDenied, which the boot script waits on like NoSuchKey."""
    return {
        "Version": "1",
        "Statement": [
            {"Effect": "Allow", "Action": ["kms:GetSecretValue"], "Resource": [secret_arn]},
            {
                "Effect": "Allow",
                "Action": ["oss:GetObject"],
                "Resource": [f"acs:oss:*:*:{bucket}/{cloudinit.ONBOOT_PREFIX}/*"],
            },
        ],
    }


class OnBoot(pulumi.ComponentResource):
    """What autoscaled assistant hosts configure themselves from (infra/boot_configure.py, docs/adr/0039): a KMS
    secret with their variables and the issuing CA (what the AWS secret holds), and the RAM role the launch templates
    give them, which may read that secret and the hand-off's artifact prefix of the backup bucket, nothing else."""

    role_name: pulumi.Output[str]
    secret_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        stack: str,
        bucket: ali.oss.Bucket,
        value: pulumi.Input[str],
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:alicloud:OnBoot", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key_id: pulumi.Output[str] | None = None
        if conf.kms_instance_id:
            # KMS 3.0 keeps secrets in an instance, encrypted with a key of that instance.
            key = ali.kms.Key(
                f"{name}-key",
                dkms_instance_id=conf.kms_instance_id,
                key_spec="Aliyun_AES_256",
                key_usage="ENCRYPT/DECRYPT",
                description=f"{stack}: on-boot secret of the autoscaled assistant hosts",
                pending_window_in_days=7,
                tags=tags,
                opts=child,
            )
            key_id = key.id
        secret_value = pulumi.Output.secret(value)
        self.secret = ali.kms.Secret(
            name,
            secret_name=f"{stack}-assistant-onboot",
            secret_data=secret_value,
            # Generic: the provider applies a changed secret_data (as a new version) only to generic secrets.
            secret_type="Generic",  # noqa: S106  # pragma: allowlist secret
            secret_data_type="text",  # noqa: S106 - a type name, not a password  # pragma: allowlist secret
            # A new version whenever the value changes (a rotated password, a new issuing CA); the id is a digest of
            # the value, so it stays secret too.
            version_id=secret_value.apply(lambda v: "v-" + hashlib.sha256(v.encode()).hexdigest()[:32]),
            description="ai-assistant: on-boot configuration of autoscaled assistant hosts",
            dkms_instance_id=conf.kms_instance_id,
            encryption_key_id=key_id,
            recovery_window_in_days=7,
            tags=tags,
            opts=child,
        )
        role_name = f"{stack}-assistant-onboot"
        role = ali.ram.Role(
            name, role_name=role_name, assume_role_policy_document=ECS_ASSUME_ROLE, tags=tags, opts=child
        )
        policy = ali.ram.Policy(
            name,
            policy_name=role_name,
            policy_document=pulumi.Output.all(self.secret.arn, bucket.bucket).apply(
                lambda a: json.dumps(onboot_policy(str(a[0]), str(a[1])))
            ),
            opts=child,
        )
        ali.ram.RolePolicyAttachment(
            name, policy_name=policy.policy_name, policy_type="Custom", role_name=role.role_name, opts=child
        )
        self.role_name = role.role_name
        self.secret_name = self.secret.secret_name
        self.bucket = bucket.bucket
        self.register_outputs({"role": self.role_name, "secret": self.secret_name})


# ApsaraDB account names: lowercase letters, digits and _, so not the roles' "ai-assistant" (test_provider_rules).
REDIS_ACCOUNT = "ai_assistant"


def _shared_redis(
    conf: InfraConfig,
    stack: str,
    net: Network,
    password: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> tuple[ali.kvstore.Instance, RedisEndpoint]:
    """The one Redis of the deployment: ApsaraDB for Redis Standard (master-replica), master in the primary zone,
    replica in the standby zone (automatic failover), TLS on, reachable from the private vSwitches only."""
    instance_class, _ = REDIS_CLASSES["alicloud"][conf.tier]
    redis = ali.kvstore.Instance(
        "redis",
        db_instance_name=f"{stack}-redis",
        instance_type="Redis",
        engine_version="7.0",
        instance_class=instance_class,
        payment_type="PostPaid",
        zone_id=conf.zones[0],
        secondary_zone_id=conf.zones[1],
        vswitch_id=net.private[0].id,
        security_ips=list(net.private_cidrs),
        ssl_enable="Enable",
        vpc_auth_mode="Open",  # password required inside the VPC
        tags=tags,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=True)),
    )
    ali.kvstore.Account(
        "redis-assistant",
        instance_id=redis.id,
        account_name=REDIS_ACCOUNT,
        account_password=password,
        account_privilege="RoleReadWrite",
        account_type="Normal",
        opts=opts,
    )
    return redis, RedisEndpoint(host=redis.connection_domain, port=REDIS, user=REDIS_ACCOUNT, tls=True)


def build(
    conf: InfraConfig, stack: str, redis_password: pulumi.Input[str], onboot_secret: pulumi.Input[str] | None = None
) -> Deployment:
    provider = ali.Provider("alicloud", region=conf.region)
    replica_provider = ali.Provider("alicloud-backup", region=conf.backup_region)
    popts = pulumi.ResourceOptions(provider=provider)
    tier = CATALOGUE[conf.tier]
    # The provider has no default tags: every taggable resource gets the stack's tags here.
    tags = {"ai-assistant:stack": stack, "ai-assistant:managed-by": "pulumi"}
    net = Network("net", conf, tags, popts)
    groups = SecurityGroups("sg", conf, net, tags, popts)
    backups = BackupBuckets("backup", conf, replica_provider, tags, popts)
    hosts_parent = HostsGroup("hosts", popts)
    child = pulumi.ResourceOptions(parent=hosts_parent)
    image = conf.image_id
    key = (
        ali.ecs.EcsKeyPair(
            "admin", key_pair_name=f"{stack}-admin", public_key=conf.ssh_public_key, tags=tags, opts=child
        )
        if conf.ssh_public_key
        else None
    )
    backup_role = _backup_role(f"{stack}-data-backup", backups.bucket, tags, child)
    hosts: list[Host] = []
    ready: list[pulumi.Resource] = [*net.nats]

    def instance(
        host: str,
        role: NodeRole,
        zi: int,
        sg: ali.ecs.SecurityGroup,
        disk_gib: int,
        color: Color | None = None,
        *,
        public: bool = False,
        ssh_sources: list[str] | None = None,
        https_sources: list[str] | None = None,
        role_name: pulumi.Input[str] | None = None,
    ) -> ali.ecs.Instance:
        inst = ali.ecs.Instance(
            host,
            instance_name=host,
            host_name=host,
            availability_zone=conf.zones[zi],
            vswitch_id=(net.public if public else net.private)[zi].id,
            security_groups=[sg.id],
            instance_type=instance_type(conf.cloud, conf.tier, role),
            image_id=image,
            key_name=key.key_pair_name if key else None,
            system_disk_category="cloud_essd",
            system_disk_size=20,
            system_disk_encrypted=True,
            data_disks=[
                ali.ecs.InstanceDataDiskArgs(
                    name=f"{host}-data",
                    size=disk_gib,
                    category="cloud_essd",
                    encrypted=True,
                    # A data host's disk outlives the instance, so even a deliberate replacement leaves the data.
                    delete_with_instance=role != "data",
                )
            ]
            if role != "bastion"
            else None,
            http_tokens="required",  # metadata service in security-hardening (token) mode, like IMDSv2
            internet_max_bandwidth_out=10 if public else 0,
            role_name=role_name,
            user_data=cloudinit.user_data(
                "alicloud",
                ssh_public_key=conf.ssh_public_key,
                ssh_sources=ssh_sources or net.public_cidrs,
                https_sources=https_sources or [],
                data_disk=role != "bastion",
            ),
            tags={
                **tags,
                "ai-assistant:role": role,
                "ai-assistant:zone": conf.zones[zi],
                **({"ai-assistant:color": color} if color else {}),
            },
            opts=host_options(role, hosts_parent),
        )
        if role != "bastion":
            hosts.append(Host(host, role, conf.zones[zi], color, inst.private_ip, inst))
        ready.append(inst)
        return inst

    members: dict[tuple[Color, int], list[ali.ecs.Instance]] | None = None
    if not conf.autoscaling:
        members = {}
        for color in conf.deploy_colors:
            for zi, zone in enumerate(conf.zones):
                z = zone_suffix(zone)
                members[(color, zi)] = [
                    instance(
                        f"assistant-{color}-{z}{n + 1}",
                        "assistant",
                        zi,
                        groups.assistant,
                        tier.assistant.data_disk_gib,
                        color,
                        # 443 at first boot from the ALB's vSwitches; egress-only hosts open none until Ansible.
                        https_sources=net.public_cidrs if conf.ingress == "public" else [],
                    )
                    for n in range(tier.assistant_per_zone)
                ]
    for zi, zone in enumerate(conf.zones):
        instance(
            f"data-{zone_suffix(zone)}",
            "data",
            zi,
            groups.data,
            tier.data.data_disk_gib,
            role_name=backup_role.role_name,
        )
    if conf.inference.mode == "gpu":
        instance(f"inference-{zone_suffix(conf.zones[0])}", "inference", 0, groups.inference, GPU_DISK_GIB)
    bastion_ip: pulumi.Output[str] | None = None
    if conf.admin_cidrs:
        bastion = instance("bastion", "bastion", 0, groups.bastion, 0, public=True, ssh_sources=list(conf.admin_cidrs))
        bastion_ip = bastion.public_ip
    lb = LoadBalancer("lb", conf, net, groups, members, tags, popts) if conf.ingress == "public" else None
    if lb is not None and any(r.email for r in conf.alert_receivers):
        ZoneAlarms("zone-alarms", conf, stack, lb, tags, popts)
    redis, redis_endpoint = _shared_redis(conf, stack, net, redis_password, tags, popts)
    ready.append(redis)
    dynamic_inventory: pulumi.Output[str] | None = None
    dynamic_hosts = 0
    onboot = (
        OnBoot("hosts-onboot", conf, stack, backups.bucket, onboot_secret, tags, child)
        if conf.autoscaling and onboot_secret is not None
        else None
    )
    if conf.autoscaling:
        for color in conf.deploy_colors:
            for zi in range(len(conf.zones)):
                ready.append(
                    _assistant_scaling_group(
                        conf,
                        stack,
                        net,
                        groups,
                        lb,
                        color,
                        zi,
                        image=image,
                        key_name=key.key_pair_name if key else None,
                        onboot=onboot,
                        opts=child,
                    )
                )
                dynamic_hosts += tier.assistant_per_zone
        dynamic_inventory = pulumi.Output.from_input(_alicloud_ecs_inventory(conf, stack))
    hosts_parent.register_outputs({"hosts": [h.name for h in hosts]})
    return Deployment(
        hosts=hosts,
        lb_address=lb.alb.dns_name if lb else None,
        egress_ip=net.egress_eip.ip_address,
        egress_ips=[e.ip_address for e in net.egress_eips],
        redis=redis_endpoint,
        bastion_ip=bastion_ip,
        backup_bucket=backups.bucket.bucket,
        backup_replica_bucket=backups.replica.bucket,
        public_cidrs=net.public_cidrs,
        private_cidrs=net.private_cidrs,
        dynamic_inventory=dynamic_inventory,
        dynamic_hosts=dynamic_hosts,
        ready=ready,
    )


def _assistant_scaling_group(
    conf: InfraConfig,
    stack: str,
    net: Network,
    groups: SecurityGroups,
    lb: LoadBalancer | None,
    color: Color,
    zi: int,
    *,
    image: pulumi.Input[str],
    key_name: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions,
    onboot: OnBoot | None = None,
) -> ali.ess.ScalingGroup:
    """One ESS scaling group per colour and zone, sized like the fixed hosts, joined to that pair's server group.

    Instances come from an ECS launch template rather than an ESS scaling configuration: a scaling configuration
    can only switch the metadata service on or off, while the template can require tokens (http_tokens), which the
    fixed hosts and the policy pack's metadata-hardened rule demand.
    """
    tier = CATALOGUE[conf.tier]
    name = f"assistant-{color}-{zone_suffix(conf.zones[zi])}"
    tags = {
        "ai-assistant:stack": stack,
        "ai-assistant:managed-by": "pulumi",
        "ai-assistant:role": "assistant",
        "ai-assistant:color": color,
        "ai-assistant:zone": conf.zones[zi],
    }

    def render(bucket: str | None, secret: str | None, role: str | None) -> str:
        # One launch template per colour and zone: the user data names the host's groups (docs/adr/0039).
        boot = {"cloud": "alicloud", "region": conf.region, "bucket": bucket, "prefix": cloudinit.ONBOOT_PREFIX,
                "secret_id": secret, "color": color, "zone": conf.zones[zi], "ram_role": role}  # fmt: skip
        return cloudinit.user_data(
            "alicloud",
            ssh_public_key=conf.ssh_public_key,
            ssh_sources=net.public_cidrs,
            https_sources=net.public_cidrs if lb else [],
            onboot={k: str(v) for k, v in boot.items()} if bucket and secret and role else None,
        )

    user_data: pulumi.Output[str] = (
        pulumi.Output.all(onboot.bucket, onboot.secret_name, onboot.role_name).apply(lambda a: render(a[0], a[1], a[2]))
        if onboot is not None
        else pulumi.Output.from_input(render(None, None, None))
    )
    template = ali.ecs.EcsLaunchTemplate(
        name,
        launch_template_name=f"{stack}-{name}",
        image_id=image,
        instance_type=instance_type(conf.cloud, conf.tier, "assistant"),
        instance_charge_type="PostPaid",  # Auto Scaling launches pay-as-you-go instances only
        instance_name=name,
        network_type="vpc",
        vpc_id=net.vpc.id,
        vswitch_id=net.private[zi].id,
        zone_id=conf.zones[zi],
        security_group_ids=[groups.assistant.id],
        key_pair_name=key_name,
        internet_max_bandwidth_out=0,
        system_disk=ali.ecs.EcsLaunchTemplateSystemDiskArgs(
            category="cloud_essd", size=20, encrypted=True, delete_with_instance=True
        ),
        data_disks=[
            ali.ecs.EcsLaunchTemplateDataDiskArgs(
                name=f"{name}-data",
                category="cloud_essd",
                size=tier.assistant.data_disk_gib,
                encrypted=True,
                delete_with_instance=True,
            )
        ],
        http_endpoint="enabled",
        http_tokens="required",
        # The provider hands user_data to CreateLaunchTemplate unchanged, and the API takes it Base64-encoded
        # (ecs.Instance encodes for you; the launch template does not).
        user_data=user_data.apply(lambda u: base64.b64encode(u.encode()).decode()),
        # The on-boot role: its STS credentials are what the boot script reads the secret and the artifact with.
        ram_role_name=onboot.role_name if onboot is not None else None,
        tags=tags,
        template_tags=tags,
        opts=opts,
    )
    group = ali.ess.ScalingGroup(
        name,
        scaling_group_name=f"{stack}-{name}",
        min_size=tier.assistant_per_zone,
        desired_capacity=tier.assistant_per_zone,
        max_size=tier.assistant_max_per_zone,
        vswitch_ids=[net.private[zi].id],
        launch_template_id=template.id,
        launch_template_version="Latest",
        # ECS status, not LOAD_BALANCER: ESS has no grace period, and a host fails its health check until Ansible has
        # configured it, so load-balancer health checks would replace every new host before the hand-off reaches it.
        health_check_type="ECS",
        alb_server_groups=[
            ali.ess.ScalingGroupAlbServerGroupArgs(
                # The zone's weight on every server the group adds, like the fixed hosts (0: drained, failover).
                alb_server_group_id=lb.server_groups[color].id,
                port=HTTPS,
                weight=zone_weights(conf)[zi],
            )
        ]
        if lb
        else [],
        tags=tags,
        # The scaling rule moves the desired capacity; a `pulumi up` must not reset it to the minimum.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=["desired_capacity"])),
    )
    # Target tracking on average CPU, like AWS (infra/aws_stack.py: SCALE_CPU_TARGET).
    ali.ess.ScalingRule(
        name,
        scaling_group_id=group.id,
        scaling_rule_name=f"{stack}-{name}-cpu",
        scaling_rule_type="TargetTrackingScalingRule",
        metric_name="CpuUtilization",
        target_value=SCALE_CPU_TARGET,
        estimated_instance_warmup=SCALE_WARMUP_S,
        opts=opts,
    )
    return group


def _alicloud_ecs_inventory(conf: InfraConfig, stack: str) -> str:
    """alibaba.alicloud.alicloud_ecs inventory source for the autoscaled hosts, grouped like the static inventory.

    The plugin passes `filters` to footmark's describe_instances as DescribeInstances parameters; the stack tag
    keeps another stack's hosts in the same region out of this one's play.
    """
    doc = {
        "plugin": "alibaba.alicloud.alicloud_ecs",
        "regions": [conf.region],
        "filters": {
            "status": "Running",
            "tags": {"ai-assistant:role": "assistant", "ai-assistant:stack": stack},
        },
        "keyed_groups": [
            {"key": "tags['ai-assistant:role']", "separator": "", "prefix": ""},
            {"key": "tags['ai-assistant:color']", "prefix": "color"},
            {"key": "availability_zone | replace('-', '_')", "prefix": "zone"},
        ],
        "hostnames": ["instance_id"],
        "compose": {
            "ansible_host": "private_ip_address",
            "ai_assistant_color": "tags['ai-assistant:color']",
            "ai_assistant_zone": "availability_zone",
        },
    }
    return json.dumps(doc, indent=2)


# Inputs day-to-day config must not touch on a running host: a new image_id re-images the system disk in place, and
# user data only matters at first boot. An image bump reaches new hosts (a new colour, scaling launches) and a host
# only when it is replaced on purpose (`pulumi up --replace <urn>`).
HOST_IGNORE = ["image_id", "user_data"]
# Data hosts also keep their disks as created (a data_disks change forces a new instance).
DATA_HOST_IGNORE = [*HOST_IGNORE, "data_disks", "system_disk_size", "system_disk_category"]


def host_options(role: NodeRole, parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """Data hosts hold Weaviate, monitoring history and the backup staging area: protected, never replaced by drift."""
    if role == "data":
        return pulumi.ResourceOptions(parent=parent, protect=True, ignore_changes=DATA_HOST_IGNORE)
    return pulumi.ResourceOptions(parent=parent, ignore_changes=HOST_IGNORE)


class HostsGroup(pulumi.ComponentResource):
    """Parent of the ECS hosts, their key pair and the data hosts' RAM role."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ai-assistant:alicloud:Compute", name, None, opts)
