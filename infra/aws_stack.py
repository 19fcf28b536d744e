"""AWS: network over two zones, security groups, instances, the weighted blue/green ALB and the backup buckets."""

from __future__ import annotations

import base64
import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import cloudinit
from infra.cloudinit import ONBOOT_PREFIX
from infra.config import COLORS, Color, InfraConfig, color_weights, traffic_weights
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
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


def _subnets(vpc_cidr: str) -> list[str]:
    import ipaddress

    return [str(n) for n in list(ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20))[:4]]


class Network(pulumi.ComponentResource):
    """VPC with a public and a private subnet in each zone, and a NAT gateway per zone: each zone's hosts leave through
    their own zone's NAT, so losing a zone does not cut the other's egress. The Elastic IPs are the egress addresses
    (two to allow-list; docs/adr/0034-one-state-across-zones.md)."""

    def __init__(self, name: str, conf: InfraConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ai-assistant:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cidrs = _subnets(conf.vpc_cidr)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc", cidr_block=conf.vpc_cidr, enable_dns_hostnames=True, enable_dns_support=True, opts=child
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block=WORLD_V4, gateway_id=igw.id)],
            opts=child,
        )
        self.public_cidrs = cidrs[0:2]
        self.private_cidrs = cidrs[2:4]
        self.public_subnets: list[aws.ec2.Subnet] = []
        self.private_subnets: list[aws.ec2.Subnet] = []
        for i, zone in enumerate(conf.zones):
            z = zone_suffix(zone)
            pub = aws.ec2.Subnet(
                f"{name}-public-{z}",
                vpc_id=self.vpc.id,
                cidr_block=self.public_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{z}", subnet_id=pub.id, route_table_id=public_rt.id, opts=child
            )
            priv = aws.ec2.Subnet(
                f"{name}-private-{z}",
                vpc_id=self.vpc.id,
                cidr_block=self.private_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                opts=child,
            )
            self.public_subnets.append(pub)
            self.private_subnets.append(priv)
        # A NAT gateway per zone (docs/adr/0034-one-state-across-zones.md). The primary zone's keeps the logical
        # names of the single NAT it replaces, so its Elastic IP, already on the IM platforms' allow-lists, stays.
        self.egress_eips: list[aws.ec2.Eip] = []
        self.nats: list[aws.ec2.NatGateway] = []
        for i, zone in enumerate(conf.zones):
            suffix = "" if i == 0 else f"-{zone_suffix(zone)}"
            eip = aws.ec2.Eip(f"{name}-egress{suffix}", domain="vpc", tags={"ai-assistant:zone": zone}, opts=child)
            nat = aws.ec2.NatGateway(
                f"{name}-nat{suffix}",
                allocation_id=eip.id,
                subnet_id=self.public_subnets[i].id,
                tags={"ai-assistant:zone": zone},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )
            private_rt = aws.ec2.RouteTable(
                f"{name}-private{suffix}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block=WORLD_V4, nat_gateway_id=nat.id)],
                tags={"ai-assistant:zone": zone},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone_suffix(zone)}",
                subnet_id=self.private_subnets[i].id,
                route_table_id=private_rt.id,
                opts=child,
            )
            self.egress_eips.append(eip)
            self.nats.append(nat)
        self.egress_eip = self.egress_eips[0]
        self.nat = self.nats[0]
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "egress_ips": [e.public_ip for e in self.egress_eips],
                "private_subnet_ids": [s.id for s in self.private_subnets],
            }
        )


class SecurityGroups(pulumi.ComponentResource):
    """443 from the world (or the IM platforms' ranges) to the load balancer only; instances only from the LB;
    SSH only from the bastion, and to the bastion only from the admin CIDRs."""

    def __init__(
        self, name: str, conf: InfraConfig, vpc: aws.ec2.Vpc, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ai-assistant:aws:SecurityGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def group(role: str, description: str) -> aws.ec2.SecurityGroup:
            return aws.ec2.SecurityGroup(
                f"{name}-{role}",
                # Explicit prefix: the auto-name would start with the logical name, and AWS refuses group names that
                # start with sg- (tests/infra/test_provider_rules.py).
                name_prefix=f"ai-assistant-{role}-",
                vpc_id=vpc.id,
                description=description,
                tags={"ai-assistant:role": role},
                opts=child,
            )

        # Egress-only (ingress none): no load balancer, so no group for it and nothing on 443 from it.
        self.lb = group("lb", "HTTPS load balancer") if conf.ingress == "public" else None
        # The same description either way: AWS replaces a group whose description changes.
        self.assistant = group("assistant", "assistant hosts: HTTPS from the LB only")
        self.data = group("data", "Redis and Weaviate: from assistant hosts only")
        self.inference = group("inference", "GPU model server: from assistant hosts only")
        self.bastion = group("bastion", "SSH jump host: admin CIDRs only")

        def ingress(
            rule: str, sg: aws.ec2.SecurityGroup, port: int, *, cidr: str | None = None, src: Any = None
        ) -> None:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-{rule}",
                security_group_id=sg.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=cidr,
                referenced_security_group_id=src.id if src is not None else None,
                description=rule,
                opts=child,
            )

        def egress_all(sg: aws.ec2.SecurityGroup, role: str) -> None:
            # Hosts reach the IM platforms' APIs, package mirrors and an external model endpoint through the NAT.
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{role}-egress", security_group_id=sg.id, ip_protocol="-1", cidr_ipv4=WORLD_V4, opts=child
            )

        if self.lb is not None:
            https_sources = list(conf.im_source_cidrs) + list(conf.admin_cidrs) if conf.im_source_cidrs else [WORLD_V4]
            for i, cidr in enumerate(https_sources):
                ingress(f"lb-https-{i}", self.lb, HTTPS, cidr=cidr)
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-lb-to-assistant",
                security_group_id=self.lb.id,
                ip_protocol="tcp",
                from_port=HTTPS,
                to_port=HTTPS,
                referenced_security_group_id=self.assistant.id,
                opts=child,
            )
            ingress("assistant-https-from-lb", self.assistant, HTTPS, src=self.lb)
        # Alertmanager -> the assistant's POST /api/alerts: the private path, kept in an egress-only stack too.
        ingress("assistant-https-from-data", self.assistant, HTTPS, src=self.data)
        # Prometheus on the monitoring (data) host scrapes node-exporter everywhere, the assistant and the model server.
        ingress("assistant-node-metrics-from-data", self.assistant, NODE_EXPORTER, src=self.data)
        ingress("assistant-metrics-from-data", self.assistant, ASSISTANT_METRICS, src=self.data)
        ingress("assistant-green-metrics-from-data", self.assistant, ASSISTANT_GREEN_METRICS, src=self.data)
        for port, label in ((REDIS, "redis"), (WEAVIATE_HTTP, "weaviate"), (WEAVIATE_GRPC, "weaviate-grpc")):
            ingress(f"data-{label}-from-assistant", self.data, port, src=self.assistant)
            ingress(f"data-{label}-from-data", self.data, port, src=self.data)  # replication between the two zones
        ingress("data-node-metrics-from-data", self.data, NODE_EXPORTER, src=self.data)
        ingress("inference-from-assistant", self.inference, MODEL_SERVER, src=self.assistant)
        ingress("inference-node-metrics-from-data", self.inference, NODE_EXPORTER, src=self.data)
        ingress("inference-metrics-from-data", self.inference, MODEL_SERVER, src=self.data)
        for sg, role in ((self.assistant, "assistant"), (self.data, "data"), (self.inference, "inference")):
            ingress(f"{role}-ssh-from-bastion", sg, SSH, src=self.bastion)
            # Every host's journal to journal-remote on the monitoring (data) host (playbooks/monitoring.yml).
            ingress(f"data-journal-from-{role}", self.data, JOURNAL_REMOTE, src=sg)
            egress_all(sg, role)
        for i, cidr in enumerate(conf.admin_cidrs):
            ingress(f"bastion-ssh-{i}", self.bastion, SSH, cidr=cidr)
        egress_all(self.bastion, "bastion")
        self.register_outputs(
            {"lb": self.lb.id if self.lb else None, "assistant": self.assistant.id, "data": self.data.id}
        )


class BackupBuckets(pulumi.ComponentResource):
    """Private, versioned, encrypted bucket with lifecycle rules, replicated to the backup region."""

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        replica_provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:aws:BackupBuckets", name, None, opts)
        primary = self._bucket(f"{name}-primary", conf, pulumi.ResourceOptions(parent=self))
        replica = self._bucket(f"{name}-replica", conf, pulumi.ResourceOptions(parent=self, provider=replica_provider))
        role = aws.iam.Role(
            f"{name}-replication",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicy(
            f"{name}-replication",
            role=role.id,
            policy=pulumi.Output.all(primary[0].arn, replica[0].arn).apply(
                lambda arns: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                                "Resource": [arns[0]],
                            },
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "s3:GetObjectVersionForReplication",
                                    "s3:GetObjectVersionAcl",
                                    "s3:GetObjectVersionTagging",
                                ],
                                "Resource": [f"{arns[0]}/*"],
                            },
                            {
                                "Effect": "Allow",
                                "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                                "Resource": [f"{arns[1]}/*"],
                            },
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.s3.BucketReplicationConfig(
            f"{name}-replication",
            bucket=primary[0].id,
            role=role.arn,
            rules=[
                aws.s3.BucketReplicationConfigRuleArgs(
                    id="offsite-daily",
                    status="Enabled",
                    filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=""),
                    delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(
                        status="Disabled"  # a deletion at home must not erase the off-site copy
                    ),
                    destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
                        bucket=replica[0].arn, storage_class="STANDARD_IA"
                    ),
                )
            ],
            # Replication needs versioning on both sides first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[primary[1], replica[1]]),
        )
        self.bucket = primary[0]
        self.replica = replica[0]
        self.register_outputs({"bucket": primary[0].bucket, "replica": replica[0].bucket})

    @staticmethod
    def _bucket(name: str, conf: InfraConfig, opts: pulumi.ResourceOptions) -> tuple[aws.s3.Bucket, pulumi.Resource]:
        # Backups are the last copy after a disaster: `pulumi destroy` must neither fail half-way on them nor delete
        # them (protect stops an accidental delete; retain_on_delete keeps the bucket when a stack is torn down).
        bucket = aws.s3.Bucket(
            name,
            force_destroy=False,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=True, retain_on_delete=True)),
        )
        o = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[bucket]))
        aws.s3.BucketPublicAccessBlock(
            name,
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=o,
        )
        aws.s3.BucketOwnershipControls(
            name,
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=o,
        )
        versioning = aws.s3.BucketVersioning(
            name,
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=o,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            name,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                )
            ],
            opts=o,
        )
        aws.s3.BucketLifecycleConfiguration(
            name,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="retention",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    # No expiry of current objects: restic's new snapshots keep using old data packs, so only restic
                    # (`forget --prune`, roles/backup) may delete them; what it deletes stays as a noncurrent version
                    # for the retention period (a guard against a compromised host deleting the backups).
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=conf.backup_retention_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            opts=pulumi.ResourceOptions.merge(o, pulumi.ResourceOptions(depends_on=[versioning])),
        )
        aws.s3.BucketPolicy(
            name,
            bucket=bucket.id,
            policy=bucket.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "DenyInsecureTransport",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:*",
                                "Resource": [arn, f"{arn}/*"],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ],
                    }
                )
            ),
            opts=o,
        )
        return bucket, versioning


def _block_devices(disk_gib: int, *, keep: bool) -> tuple[Any, list[Any]]:
    """keep: the data disk outlives its instance (data hosts), so even a deliberate replacement leaves the data."""
    root = aws.ec2.InstanceRootBlockDeviceArgs(volume_type="gp3", volume_size=20, encrypted=True)
    data = [
        aws.ec2.InstanceEbsBlockDeviceArgs(
            device_name="/dev/sdf",
            volume_type="gp3",
            volume_size=disk_gib,
            encrypted=True,
            delete_on_termination=not keep,
        )
    ]
    return root, data


# Inputs whose change would replace or reboot a host and that day-to-day config must not touch: an image bump
# reaches new hosts (a new colour, a scaling group's launches) and a host only when it is replaced on purpose
# (`pulumi up --replace <urn>`); cloud-init user data only matters at first boot anyway.
HOST_IGNORE = ["ami", "user_data"]
# Data hosts also keep their disks as created: any change to an inline EBS device forces a new instance.
DATA_HOST_IGNORE = [*HOST_IGNORE, "ebs_block_devices", "root_block_device"]


def host_options(role: NodeRole, parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """Data hosts hold Weaviate, monitoring history and the backup staging area: protected, never replaced by drift."""
    if role == "data":
        return pulumi.ResourceOptions(parent=parent, protect=True, ignore_changes=DATA_HOST_IGNORE)
    return pulumi.ResourceOptions(parent=parent, ignore_changes=HOST_IGNORE)


METADATA = aws.ec2.InstanceMetadataOptionsArgs(
    http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1, instance_metadata_tags="disabled"
)


# The load balancer checks liveness, not readiness: /readyz includes the model engine and the store, so an outage of
# either would mark every host unhealthy, and with autoscaling the groups would replace every host for nothing.
HEALTH_PATH = "/healthz"


# How fast a dead zone leaves rotation: a target is unhealthy after UNHEALTHY_THRESHOLD failed checks HEALTH_INTERVAL_S
# apart (each waits up to HEALTH_TIMEOUT_S), about 45-50 s; it serves again after HEALTHY_THRESHOLD good checks (30 s).
HEALTH_INTERVAL_S = 15
HEALTH_TIMEOUT_S = 5
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3


class LoadBalancer(pulumi.ComponentResource):
    """ALB with HTTPS, liveness health checks and one target group per colour holding that colour's hosts in both
    zones; the listener weighs the colours (blue/green, canary).

    The zones are not weighted: the ALB sends a group's requests to its healthy targets in every zone (cross-zone
    load balancing), so a zone without a healthy host gets nothing and the other zone takes all of it by itself
    (docs/adr/0038-zone-failover-by-health.md). A group per (colour, zone) behind weights would keep sending the dead
    zone its share: the ALB fails open inside a group whose targets are all unhealthy.
    """

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        network: Network,
        groups: SecurityGroups,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:aws:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            subnets=[s.id for s in network.public_subnets],
            security_groups=[groups.lb.id] if groups.lb else [],
            drop_invalid_header_fields=True,
            idle_timeout=120,
            opts=child,
        )
        self.target_groups: dict[Color, aws.lb.TargetGroup] = {}
        for color in COLORS:
            self.target_groups[color] = aws.lb.TargetGroup(
                f"tg-{color}",
                port=HTTPS,
                protocol="HTTPS",
                target_type="instance",
                vpc_id=network.vpc.id,
                deregistration_delay=30,
                # The ALB's default, stated: every node reaches the targets of both zones, so the healthy zone's
                # hosts take the requests the other zone's node receives, and the group only fails open when no
                # target in either zone is healthy (target group health is counted over all zones then).
                load_balancing_cross_zone_enabled="true",
                health_check=aws.lb.TargetGroupHealthCheckArgs(
                    enabled=True,
                    path=HEALTH_PATH,
                    protocol="HTTPS",
                    matcher="200",
                    interval=HEALTH_INTERVAL_S,
                    timeout=HEALTH_TIMEOUT_S,
                    healthy_threshold=HEALTHY_THRESHOLD,
                    unhealthy_threshold=UNHEALTHY_THRESHOLD,
                ),
                tags={"ai-assistant:color": color},
                opts=child,
            )
        cert_arn = conf.certificate_id or self._certificate(name, conf, child)
        weights = color_weights(conf)
        self.listener = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.alb.arn,
            port=HTTPS,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=cert_arn,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="forward",
                    forward=aws.lb.ListenerDefaultActionForwardArgs(
                        target_groups=[
                            aws.lb.ListenerDefaultActionForwardTargetGroupArgs(arn=tg.arn, weight=weights[color])
                            for color, tg in self.target_groups.items()
                        ]
                    ),
                )
            ],
            opts=child,
        )
        if conf.dns_zone:
            aws.route53.Record(
                f"{name}-dns",
                zone_id=conf.dns_zone,
                name=conf.domain,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=self.alb.dns_name, zone_id=self.alb.zone_id, evaluate_target_health=True
                    )
                ],
                opts=child,
            )
        self.register_outputs(
            {"dns_name": self.alb.dns_name, "weights": {f"{c}-{z}": w for (c, z), w in traffic_weights(conf).items()}}
        )

    def _certificate(self, name: str, conf: InfraConfig, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        cert = aws.acm.Certificate(f"{name}-cert", domain_name=conf.domain, validation_method="DNS", opts=child)
        record = aws.route53.Record(
            f"{name}-cert-validation",
            zone_id=str(conf.dns_zone),
            name=cert.domain_validation_options[0].resource_record_name,
            type=cert.domain_validation_options[0].resource_record_type,
            records=[cert.domain_validation_options[0].resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        validation = aws.acm.CertificateValidation(
            f"{name}-cert", certificate_arn=cert.arn, validation_record_fqdns=[record.fqdn], opts=child
        )
        return validation.certificate_arn


class ZoneAlarms(pulumi.ComponentResource):
    """Regional CloudWatch alarms that outlive either zone: for every deployed colour and every zone in rotation,
    "no healthy assistant host in this zone" (the colour's target group's HealthyHostCount in that Availability
    Zone below 1), sent through an SNS topic to the alertReceivers' e-mail addresses when it fires and when it
    clears. Prometheus and Alertmanager run in the primary zone and go down with it; these do not
    (docs/adr/0038-zone-failover-by-health.md)."""

    def __init__(
        self, name: str, conf: InfraConfig, stack: str, lb: LoadBalancer, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ai-assistant:aws:ZoneAlarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(name, tags={"ai-assistant:role": "alerts"}, opts=child)
        # Each address confirms its subscription once (the link in AWS's first mail) before alarms reach it.
        for i, receiver in enumerate(r for r in conf.alert_receivers if r.email):
            aws.sns.TopicSubscription(
                f"{name}-email-{i}", topic=self.topic.arn, protocol="email", endpoint=str(receiver.email), opts=child
            )
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        for color in conf.deploy_colors:
            for zi, zone in enumerate(conf.zones):
                if not in_rotation(conf, zi):
                    continue  # drained on purpose (failover: true): no healthy host there is the plan
                self.alarms.append(
                    aws.cloudwatch.MetricAlarm(
                        f"{name}-{color}-{zone_suffix(zone)}",
                        name=f"{ALARM_PREFIX}{stack}-{zone}-{color}",
                        alarm_description=(
                            f"No healthy {color} assistant host in {zone}: the load balancer sends that zone's "
                            "requests to the other zone. docs/runbooks/zone-failover.md"
                        ),
                        namespace="AWS/ApplicationELB",
                        metric_name="HealthyHostCount",
                        dimensions={
                            "TargetGroup": lb.target_groups[color].arn_suffix,
                            "LoadBalancer": lb.alb.arn_suffix,
                            "AvailabilityZone": zone,
                        },
                        statistic="Minimum",
                        period=ALARM_PERIOD_S,
                        evaluation_periods=ALARM_PERIODS,
                        threshold=1,
                        comparison_operator="LessThanThreshold",
                        # The ALB reports HealthyHostCount whenever health checks run; no data means none ran.
                        treat_missing_data="breaching",
                        alarm_actions=[self.topic.arn],
                        ok_actions=[self.topic.arn],
                        tags={"ai-assistant:color": color, "ai-assistant:zone": zone},
                        opts=child,
                    )
                )
        self.register_outputs({"topic": self.topic.arn})


class SharedRedis(pulumi.ComponentResource):
    """The one Redis of the deployment: ElastiCache with a primary in the primary zone and a replica in the standby
    zone, Multi-AZ automatic failover, encrypted at rest and in transit, AUTH with the generated Redis password.
    Only the assistant hosts' security group reaches it."""

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        network: Network,
        groups: SecurityGroups,
        password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ai-assistant:aws:SharedRedis", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.group = aws.ec2.SecurityGroup(
            f"{name}-clients",
            name_prefix="ai-assistant-redis-",
            vpc_id=network.vpc.id,
            description="managed Redis: from assistant hosts only",
            tags={"ai-assistant:role": "redis"},
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-assistant",
            security_group_id=self.group.id,
            ip_protocol="tcp",
            from_port=REDIS,
            to_port=REDIS,
            referenced_security_group_id=groups.assistant.id,
            description="redis-from-assistant",
            opts=child,
        )
        subnets = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            description="private subnets of both zones",
            subnet_ids=[s.id for s in network.private_subnets],
            opts=child,
        )
        node_type, _ = REDIS_CLASSES["aws"][conf.tier]
        self.cluster = aws.elasticache.ReplicationGroup(
            name,
            description="ai-assistant shared state: queue, de-duplication, conversation memory",
            engine="redis",
            engine_version="7.1",
            node_type=node_type,
            port=REDIS,
            num_cache_clusters=2,
            preferred_cache_cluster_azs=list(conf.zones),
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            subnet_group_name=subnets.name,
            security_group_ids=[self.group.id],
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            auth_token=password,
            snapshot_retention_limit=7,
            apply_immediately=False,
            # Stateful: protected; a minor version AWS applies by itself is not drift to undo.
            opts=pulumi.ResourceOptions(parent=self, protect=True, ignore_changes=["engine_version"]),
        )
        self.endpoint = RedisEndpoint(host=self.cluster.primary_endpoint_address, port=REDIS, user="default", tls=True)
        self.register_outputs({"endpoint": self.cluster.primary_endpoint_address})


def build(
    conf: InfraConfig, stack: str, redis_password: pulumi.Input[str], onboot_secret: pulumi.Input[str] | None = None
) -> Deployment:
    provider = aws.Provider("aws", region=conf.region, default_tags=aws.ProviderDefaultTagsArgs(tags=_tags(stack)))
    replica_provider = aws.Provider(
        "aws-backup", region=conf.backup_region, default_tags=aws.ProviderDefaultTagsArgs(tags=_tags(stack))
    )
    popts = pulumi.ResourceOptions(provider=provider)
    network = Network("net", conf, popts)
    groups = SecurityGroups("sg", conf, network.vpc, popts)
    lb = LoadBalancer("lb", conf, network, groups, popts) if conf.ingress == "public" else None
    backups = BackupBuckets("backup", conf, replica_provider, popts)
    compute = Compute("hosts", conf, stack, network, groups, lb, backups, provider, popts, onboot_secret)
    if lb is not None:
        ZoneAlarms("zone-alarms", conf, stack, lb, popts)
    redis = SharedRedis("redis", conf, network, groups, redis_password, popts)
    return Deployment(
        hosts=compute.hosts,
        lb_address=lb.alb.dns_name if lb else None,
        egress_ip=network.egress_eip.public_ip,
        egress_ips=[e.public_ip for e in network.egress_eips],
        bastion_ip=compute.bastion_ip,
        backup_bucket=backups.bucket.bucket,
        backup_replica_bucket=backups.replica.bucket,
        public_cidrs=network.public_cidrs,
        private_cidrs=network.private_cidrs,
        dynamic_inventory=compute.dynamic_inventory,
        dynamic_hosts=compute.dynamic_hosts,
        ready=[*network.nats, *compute.ready, redis.cluster],
        redis=redis.endpoint,
    )


def _tags(stack: str) -> dict[str, str]:
    return {"ai-assistant:stack": stack, "ai-assistant:managed-by": "pulumi"}


# The trust policy of every instance role: EC2 instances may assume it, nothing else.
EC2_ASSUME_ROLE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


class Compute(pulumi.ComponentResource):
    """Assistant hosts per colour and zone (or autoscaling groups), data hosts per zone, GPU node, bastion."""

    def __init__(
        self,
        name: str,
        conf: InfraConfig,
        stack: str,
        network: Network,
        groups: SecurityGroups,
        lb: LoadBalancer | None,
        backups: BackupBuckets,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
        onboot_secret: pulumi.Input[str] | None = None,
    ) -> None:
        super().__init__("ai-assistant:aws:Compute", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tier = CATALOGUE[conf.tier]
        ami = conf.image_id
        key = (
            aws.ec2.KeyPair(f"{name}-admin", public_key=conf.ssh_public_key, opts=child)
            if conf.ssh_public_key
            else None
        )
        key_name = key.key_name if key else None
        vpc_ssh = [*network.public_cidrs]  # the bastion lives there
        # 443 at first boot: the load balancer (public subnets) and Alertmanager (private); egress-only: Alertmanager.
        vpc_https = [*network.public_cidrs, *network.private_cidrs] if lb else [*network.private_cidrs]
        self.hosts: list[Host] = []
        self.ready: list[pulumi.Resource] = []
        self.dynamic_inventory: pulumi.Output[str] | None = None
        self.dynamic_hosts = 0

        profile = self._backup_profile(name, backups, child)
        onboot = self._onboot(name, backups, onboot_secret, child) if conf.autoscaling and onboot_secret else None

        def instance(
            host: str,
            role: NodeRole,
            zi: int,
            sg: aws.ec2.SecurityGroup,
            disk_gib: int,
            color: Color | None = None,
            https_from: list[str] | None = None,
            iam_profile: aws.iam.InstanceProfile | None = None,
        ) -> aws.ec2.Instance:
            root, data = _block_devices(disk_gib, keep=role == "data")
            inst = aws.ec2.Instance(
                host,
                ami=ami,
                instance_type=instance_type(conf.cloud, conf.tier, role),
                subnet_id=network.private_subnets[zi].id,
                vpc_security_group_ids=[sg.id],
                key_name=key_name,
                metadata_options=METADATA,
                root_block_device=root,
                ebs_block_devices=data,
                iam_instance_profile=iam_profile.name if iam_profile else None,
                user_data=cloudinit.user_data(
                    "aws", ssh_public_key=conf.ssh_public_key, ssh_sources=vpc_ssh, https_sources=https_from or []
                ),
                user_data_replace_on_change=False,
                tags={
                    "Name": host,
                    "ai-assistant:role": role,
                    "ai-assistant:zone": conf.zones[zi],
                    **({"ai-assistant:color": color} if color else {}),
                },
                opts=host_options(role, self),
            )
            self.hosts.append(Host(host, role, conf.zones[zi], color, inst.private_ip, inst))
            self.ready.append(inst)
            return inst

        for color in conf.deploy_colors:
            for zi, zone in enumerate(conf.zones):
                z = zone_suffix(zone)
                if conf.autoscaling:
                    self._autoscaling_group(
                        f"{name}-{color}-{z}", conf, stack, network, groups, lb, ami, key_name, color, zi, onboot
                    )
                    continue
                for n in range(tier.assistant_per_zone):
                    inst = instance(
                        f"assistant-{color}-{z}{n + 1}",
                        "assistant",
                        zi,
                        groups.assistant,
                        tier.assistant.data_disk_gib,
                        color=color,
                        https_from=vpc_https,
                    )
                    if lb is not None and in_rotation(conf, zi):
                        aws.lb.TargetGroupAttachment(
                            f"assistant-{color}-{z}{n + 1}",
                            target_group_arn=lb.target_groups[color].arn,
                            target_id=inst.id,
                            port=HTTPS,
                            opts=child,
                        )
        for zi, zone in enumerate(conf.zones):
            instance(f"data-{zone_suffix(zone)}", "data", zi, groups.data, tier.data.data_disk_gib, iam_profile=profile)
        if conf.inference.mode == "gpu":
            instance(f"inference-{zone_suffix(conf.zones[0])}", "inference", 0, groups.inference, GPU_DISK_GIB)

        self.bastion_ip: pulumi.Output[str] | None = None
        if conf.admin_cidrs:
            bastion = aws.ec2.Instance(
                "bastion",
                ami=ami,
                instance_type=instance_type(conf.cloud, conf.tier, "bastion"),
                subnet_id=network.public_subnets[0].id,
                associate_public_ip_address=True,
                vpc_security_group_ids=[groups.bastion.id],
                key_name=key_name,
                metadata_options=METADATA,
                root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                    volume_type="gp3", volume_size=10, encrypted=True
                ),
                user_data=cloudinit.user_data(
                    "aws", ssh_public_key=conf.ssh_public_key, ssh_sources=conf.admin_cidrs, data_disk=False
                ),
                tags={"Name": "bastion", "ai-assistant:role": "bastion"},
                opts=host_options("bastion", self),
            )
            self.bastion_ip = bastion.public_ip
            self.ready.append(bastion)
        self.register_outputs({"hosts": [h.name for h in self.hosts]})

    def _backup_profile(
        self, name: str, backups: BackupBuckets, child: pulumi.ResourceOptions
    ) -> aws.iam.InstanceProfile:
        """Data hosts may write and read backups in their bucket, nothing else (no delete: versioning keeps history)."""
        role = aws.iam.Role(
            f"{name}-data",
            assume_role_policy=EC2_ASSUME_ROLE,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-data-backup",
            role=role.id,
            policy=backups.bucket.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [arn]},
                            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": [f"{arn}/*"]},
                            # The on-boot artifact is code the autoscaled hosts run as root: only the hand-off
                            # writes it (docs/adr/0039).
                            {"Effect": "Deny", "Action": ["s3:PutObject"], "Resource": [f"{arn}/{ONBOOT_PREFIX}/*"]},
                        ],
                    }
                )
            ),
            opts=child,
        )
        return aws.iam.InstanceProfile(f"{name}-data", role=role.name, opts=child)

    def _onboot(
        self, name: str, backups: BackupBuckets, value: pulumi.Input[str], child: pulumi.ResourceOptions
    ) -> tuple[aws.iam.InstanceProfile, aws.secretsmanager.Secret, pulumi.Output[str]]:
        """What autoscaled assistant hosts configure themselves from (infra/boot_configure.py): the secret with their
        variables and the issuing CA, and an instance role that may read that secret and the hand-off's artifact
        prefix of the backup bucket, nothing else (no list, no write; docs/adr/0039)."""
        secret = aws.secretsmanager.Secret(
            f"{name}-onboot",
            description="ai-assistant: on-boot configuration of autoscaled assistant hosts",
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-onboot", secret_id=secret.id, secret_string=pulumi.Output.secret(value), opts=child
        )
        role = aws.iam.Role(
            f"{name}-assistant",
            assume_role_policy=EC2_ASSUME_ROLE,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-assistant-onboot",
            role=role.id,
            policy=pulumi.Output.all(secret.arn, backups.bucket.arn).apply(lambda a: json.dumps(onboot_policy(*a))),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-assistant", role=role.name, opts=child)
        return profile, secret, backups.bucket.bucket

    def _autoscaling_group(
        self,
        name: str,
        conf: InfraConfig,
        stack: str,
        network: Network,
        groups: SecurityGroups,
        lb: LoadBalancer | None,
        ami: Any,
        key_name: Any,
        color: Color,
        zi: int,
        onboot: tuple[aws.iam.InstanceProfile, aws.secretsmanager.Secret, pulumi.Output[str]] | None = None,
    ) -> None:
        tier = CATALOGUE[conf.tier]
        child = pulumi.ResourceOptions(parent=self)

        def render(bucket: str | None, secret_id: str | None) -> str:
            # One launch template per colour and zone: the user data names the host's groups (docs/adr/0039).
            boot = {"cloud": "aws", "region": conf.region, "bucket": bucket, "prefix": ONBOOT_PREFIX,
                    "secret_id": secret_id, "color": color, "zone": conf.zones[zi]}  # fmt: skip
            return cloudinit.user_data(
                "aws",
                ssh_public_key=conf.ssh_public_key,
                ssh_sources=network.public_cidrs,
                https_sources=[*network.public_cidrs, *network.private_cidrs] if lb else [*network.private_cidrs],
                onboot={k: str(v) for k, v in boot.items()} if bucket and secret_id else None,
            )

        user_data = (
            pulumi.Output.all(onboot[2], onboot[1].arn).apply(lambda a: render(a[0], a[1]))
            if onboot
            else pulumi.Output.from_input(render(None, None))
        )
        template = aws.ec2.LaunchTemplate(
            name,
            image_id=ami,
            instance_type=instance_type(conf.cloud, conf.tier, "assistant"),
            key_name=key_name,
            vpc_security_group_ids=[groups.assistant.id],
            user_data=user_data.apply(lambda u: base64.b64encode(u.encode()).decode()),
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=onboot[0].arn) if onboot else None,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=20, volume_type="gp3", encrypted="true"
                    ),
                ),
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/sdf",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=tier.assistant.data_disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                ),
            ],
            opts=child,
        )
        group = aws.autoscaling.Group(
            name,
            vpc_zone_identifiers=[network.private_subnets[zi].id],
            min_size=tier.assistant_per_zone,
            desired_capacity=tier.assistant_per_zone,
            max_size=tier.assistant_max_per_zone,
            # Egress-only: no load balancer to ask, so the group replaces hosts whose EC2 status checks fail.
            health_check_type="ELB" if lb else "EC2",
            health_check_grace_period=SCALE_WARMUP_S,
            target_group_arns=[lb.target_groups[color].arn] if lb and in_rotation(conf, zi) else [],
            launch_template=aws.autoscaling.GroupLaunchTemplateArgs(id=template.id, version="$Latest"),
            # The provider's default tags reach the group but not the instances it launches: name the stack here.
            tags=[
                aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True)
                for k, v in {
                    "ai-assistant:stack": stack,
                    "ai-assistant:role": "assistant",
                    "ai-assistant:color": color,
                    "ai-assistant:zone": conf.zones[zi],
                }.items()
            ],
            # The scaling policy moves the desired capacity; a `pulumi up` must not reset it to the minimum.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desired_capacity"]),
        )
        aws.autoscaling.Policy(
            name,
            autoscaling_group_name=group.name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=SCALE_WARMUP_S,
            target_tracking_configuration=aws.autoscaling.PolicyTargetTrackingConfigurationArgs(
                predefined_metric_specification=aws.autoscaling.PolicyTargetTrackingConfigurationPredefinedMetricSpecificationArgs(
                    predefined_metric_type="ASGAverageCPUUtilization"
                ),
                target_value=SCALE_CPU_TARGET,
            ),
            opts=child,
        )
        # The group waits for its minimum capacity, so the hand-off waiting on it finds the hosts in the cloud.
        self.ready.append(group)
        self.dynamic_hosts += tier.assistant_per_zone
        self.dynamic_inventory = pulumi.Output.from_input(_aws_ec2_inventory(conf, stack))


def in_rotation(conf: InfraConfig, zi: int) -> bool:
    """Whether zone zi's assistant hosts are registered with their colour's target group. failover: true (a planned
    move) deregisters the primary zone's: the ALB drains them (deregistration delay) and the standby zone serves all."""
    return not (conf.failover and zi == 0)


# Target tracking on average CPU: the assistant's cost per conversation is CPU (the engine is remote or on the GPU
# host), and 60 % leaves a zone room to absorb the other's share while a new host boots and is configured.
SCALE_CPU_TARGET = 60.0
SCALE_WARMUP_S = 600  # the health check grace period: a new host is not counted before it can serve


def onboot_policy(secret_arn: str, bucket_arn: str) -> dict[str, Any]:
    """The autoscaled assistant hosts' instance role: read their one secret and the artifact prefix, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": [secret_arn]},
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{bucket_arn}/{ONBOOT_PREFIX}/*"]},
        ],
    }


def _aws_ec2_inventory(conf: InfraConfig, stack: str) -> str:
    """amazon.aws.aws_ec2 inventory source for the autoscaled assistant hosts, grouped like the static inventory."""
    doc = {
        "plugin": "amazon.aws.aws_ec2",
        "regions": [conf.region],
        # Without the stack tag, a second stack in the same region would configure this one's hosts.
        "filters": {
            "tag:ai-assistant:role": "assistant",
            "tag:ai-assistant:stack": stack,
            "instance-state-name": "running",
        },
        "keyed_groups": [
            {"key": "tags['ai-assistant:role']", "separator": "", "prefix": ""},
            {"key": "tags['ai-assistant:color']", "prefix": "color"},
            {"key": "placement.availability_zone | replace('-', '_')", "prefix": "zone"},
        ],
        "hostnames": ["instance-id"],
        "compose": {
            "ansible_host": "private_ip_address",
            "ai_assistant_color": "tags['ai-assistant:color']",
            "ai_assistant_zone": "placement.availability_zone",
        },
    }
    return json.dumps(doc, indent=2)
