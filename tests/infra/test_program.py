"""The program under Pulumi's mocks, for every cloud x tier: sizes, zones, LB weights, exposure, encryption, secrets."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import COLORS
from infra.tiers import CATALOGUE, GPU_TYPES, INSTANCE_TYPES, TIERS
from tests.infra.conftest import CASES
from tests.infra.harness import Res, Run, config_for, is_secret, ports_between, run_program, unwrap
from tests.infra.routing import route

REPO = Path(__file__).resolve().parents[2]

INSTANCE = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}
ZONE_KEY = {"aws": "availabilityZone", "alicloud": "zoneId"}
Get = Callable[[str, str], Run]


def _role(r: Res) -> str:
    return str((r.props.get("tags") or {}).get("ai-assistant:role"))


def _itype(r: Res) -> str:
    return str(r.props["instanceType"])


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_instance_sizes_match_the_tier(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    t = CATALOGUE[tier]
    instances = run.of(INSTANCE[cloud])
    by_role: dict[str, list[Res]] = {}
    for r in instances:
        by_role.setdefault(_role(r), []).append(r)
    assert {_itype(r) for r in by_role["assistant"]} == {INSTANCE_TYPES[cloud][tier]["assistant"]}
    assert {_itype(r) for r in by_role["data"]} == {INSTANCE_TYPES[cloud][tier]["data"]}
    assert [_itype(r) for r in by_role["inference"]] == [GPU_TYPES[cloud]]
    assert len(by_role["assistant"]) == 2 * t.assistant_per_zone  # one colour deployed, two zones
    assert len(by_role["data"]) == 2
    assert len(by_role["bastion"]) == 1
    disks = {_role(r): _data_disk_sizes(cloud, r) for r in instances}
    assert disks["assistant"] == [t.assistant.data_disk_gib]
    assert disks["data"] == [t.data.data_disk_gib]


def _data_disk_sizes(cloud: str, r: Res) -> list[int]:
    if cloud == "aws":
        return [int(d["volumeSize"]) for d in r.props.get("ebsBlockDevices") or []]
    return [int(d["size"]) for d in r.props.get("dataDisks") or []]


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_two_zones_are_used(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    zones = set(config_for(cloud, tier)["zones"])
    subnet_type = {"aws": "aws:ec2/subnet:Subnet", "alicloud": "alicloud:vpc/switch:Switch"}[cloud]
    assert {r.props[ZONE_KEY[cloud]] for r in run.of(subnet_type)} == zones
    zone_of_subnet = {r.id: r.props[ZONE_KEY[cloud]] for r in run.of(subnet_type)}
    subnet_key = {"aws": "subnetId", "alicloud": "vswitchId"}[cloud]
    for role in ("assistant", "data"):
        used = {zone_of_subnet[r.props[subnet_key]] for r in run.of(INSTANCE[cloud]) if _role(r) == role}
        assert used == zones, f"{role} hosts in {used}"
    if cloud == "aws":
        alb = run.of("aws:lb/loadBalancer:LoadBalancer")[0]
        assert {zone_of_subnet[s] for s in alb.props["subnets"]} == zones
    else:
        alb = run.of("alicloud:alb/loadBalancer:LoadBalancer")[0]
        assert {m["zoneId"] for m in alb.props["zoneMappings"]} == zones


# The split between zones and colours, failover and blue/green weights: tests/infra/test_failover.py.


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_only_https_to_the_load_balancer_is_open_to_the_world(
    stack_run: Get, scaled_run: Get, cloud: str, tier: str, autoscaling: bool
) -> None:
    run = (scaled_run if autoscaling else stack_run)(cloud, tier)
    world = []
    if cloud == "aws":
        sg_role = {r.id: r.props["tags"]["ai-assistant:role"] for r in run.of("aws:ec2/securityGroup:SecurityGroup")}
        for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
            if r.props.get("cidrIpv4") == "0.0.0.0/0" or r.props.get("cidrIpv6") == "::/0":
                world.append(
                    (sg_role[r.props["securityGroupId"]], r.props["ipProtocol"], r.props["fromPort"], r.props["toPort"])
                )
        for r in run.of("aws:ec2/securityGroup:SecurityGroup"):
            assert not r.props.get("ingress"), f"{r.name}: inline ingress is not used"
        # Instances take 443 only from the load balancer's group, SSH only from the bastion's.
        for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
            if sg_role[r.props["securityGroupId"]] == "assistant" and r.props["fromPort"] == 443:
                assert sg_role[r.props["referencedSecurityGroupId"]] in ("lb", "data"), r.name
            if r.props["fromPort"] == 22 and sg_role[r.props["securityGroupId"]] != "bastion":
                assert sg_role[r.props["referencedSecurityGroupId"]] == "bastion", r.name
    else:
        sg_role = {
            r.id: r.props["tags"]["ai-assistant:role"] for r in run.of("alicloud:ecs/securityGroup:SecurityGroup")
        }
        for r in run.of("alicloud:ecs/securityGroupRule:SecurityGroupRule"):
            if r.props.get("cidrIp") == "0.0.0.0/0":
                lo, hi = r.props["portRange"].split("/")
                world.append((sg_role[r.props["securityGroupId"]], r.props["ipProtocol"], int(lo), int(hi)))
            if r.props["portRange"] == "22/22" and sg_role[r.props["securityGroupId"]] != "bastion":
                assert sg_role[r.props["sourceSecurityGroupId"]] == "bastion", r.name
    assert world == [("lb", "tcp", 443, 443)]


def test_im_source_cidrs_close_443_to_the_world() -> None:
    run = run_program(config_for("aws", "basic", imSourceCidrs=["149.154.160.0/20"]))
    cidrs = {r.props.get("cidrIpv4") for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")}
    assert "0.0.0.0/0" not in cidrs
    assert {"149.154.160.0/20", "198.51.100.0/24"} <= cidrs


def test_no_admin_cidrs_means_no_ssh_and_no_bastion() -> None:
    run = run_program(config_for("aws", "basic", adminCidrs=[], handoff=False, sshPublicKey=None))
    assert all(
        r.props["fromPort"] != 22 or r.props.get("referencedSecurityGroupId")
        for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    )
    assert [r for r in run.of(INSTANCE["aws"]) if _role(r) == "bastion"] == []
    assert run.of("command:local:Command") == []
    assert run.exports["bastionIp"] == (None, False)


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_every_volume_encrypted_and_metadata_hardened(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    for r in run.of(INSTANCE[cloud]):
        p = r.props
        if cloud == "aws":
            assert p["rootBlockDevice"]["encrypted"] is True, r.name
            assert all(d["encrypted"] is True for d in p.get("ebsBlockDevices") or []), r.name
            assert p["metadataOptions"]["httpTokens"] == "required", r.name
            assert p["metadataOptions"]["httpPutResponseHopLimit"] == 1, r.name
        else:
            assert p["systemDiskEncrypted"] is True, r.name
            assert all(d["encrypted"] is True for d in p.get("dataDisks") or []), r.name
            assert p["httpTokens"] == "required", r.name


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_buckets_private_versioned_encrypted_replicated(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    retention = 30
    if cloud == "aws":
        buckets = run.of("aws:s3/bucket:Bucket")
        assert len(buckets) == 2
        for b in buckets:

            def part(typ: str, b: Res = b) -> dict[str, Any]:
                found = [r.props for r in run.of(typ) if r.props.get("bucket") == b.id]
                assert len(found) == 1, f"{b.name}: {typ}"
                return found[0]

            assert part("aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
            sse = part("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
            assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
            pab = part("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
            assert all(
                pab[k] is True
                for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
            )
            lc = part("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"][0]
            # Current objects never expire (restic's snapshots share data packs); deleted ones are kept a while.
            assert "expiration" not in lc
            assert lc["noncurrentVersionExpiration"]["noncurrentDays"] == retention
            policy = part("aws:s3/bucketPolicy:BucketPolicy")["policy"]
            assert '"aws:SecureTransport": "false"' in policy
        repl = run.of("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
        assert len(repl) == 1
        assert repl[0].props["rules"][0]["destination"]["bucket"] == "arn:aws:s3:::backup-replica-bucket"
        providers = {r.name: r.props.get("region") for r in run.of("pulumi:providers:aws")}
        assert providers == {"aws": "ap-southeast-1", "aws-backup": "ap-northeast-1"}
    else:
        buckets = run.of("alicloud:oss/bucket:Bucket")
        assert len(buckets) == 2
        for b in buckets:
            assert b.props["versioning"]["status"] == "Enabled"
            assert b.props["serverSideEncryptionRule"]["sseAlgorithm"] in ("AES256", "KMS")
            assert not b.props["lifecycleRules"][0].get("expirations")  # restic's packs are shared: see aws_stack
            assert b.props["lifecycleRules"][0]["noncurrentVersionExpirations"][0]["days"] == retention
            acl = [
                r.props for r in run.of("alicloud:oss/bucketAcl:BucketAcl") if r.props["bucket"] == b.outputs["bucket"]
            ]
            assert [a["acl"] for a in acl] == ["private"]
            pab = [
                r.props
                for r in run.of("alicloud:oss/bucketPublicAccessBlock:BucketPublicAccessBlock")
                if r.props["bucket"] == b.outputs["bucket"]
            ]
            assert [p["blockPublicAccess"] for p in pab] == [True]
        repl = run.of("alicloud:oss/bucketReplication:BucketReplication")[0].props
        assert repl["destination"] == {"bucket": "backup-replica-bucket", "location": "oss-cn-shanghai"}


def _scan(value: Any, needles: list[str], where: str) -> list[str]:
    """Paths under value that are plain (not secret-wrapped) and contain a needle."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _scan(v, needles, f"{where}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _scan(v, needles, f"{where}[{i}]")]
    text = str(value)
    return [f"{where} contains {n[:6]}..." for n in needles if n and n in text]


KNOWN_DEFAULTS = ["changeme", "change-me", "password123", "admin123", "hunter2", "secret123"]


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_no_generated_secret_or_known_default_in_plain_outputs_or_inputs(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    assert len(run.generated_secrets) == 7  # six passwords/tokens (the restic key among them) and the CA key
    needles = [*run.generated_secrets, *KNOWN_DEFAULTS]
    leaks = []
    for name, (value, secret) in run.exports.items():
        if not secret:
            leaks += _scan(value, needles, f"output {name}")
    for r in run.resources:
        if r.typ.startswith(("random:", "tls:index/privateKey")):
            continue  # the generators themselves
        leaks += _scan(r.inputs, needles, f"{r.typ} {r.name}")
    assert leaks == []
    assert run.exports["adminToken"][1] is True
    assert run.exports["grafanaAdminPassword"][1] is True
    # And the hand-off does get them, inside its secret environment.
    env = run.of("command:local:Command")[0].inputs["environment"]
    assert is_secret(env)
    secret_vars = unwrap(env)["AI_ASSISTANT_SECRET_VARS"]
    assert all(s in secret_vars for s in run.generated_secrets)


def test_operator_secrets_stay_secret() -> None:
    run = run_program(
        config_for("aws", "basic"),
        secrets={
            "imSecrets": {"feishu": {"app_secret": "feishu-app-secret-value"}},
            "inferenceApiKey": "sk-test-key-9",
        },
    )
    leaks = []
    for name, (value, secret) in run.exports.items():
        if not secret:
            leaks += _scan(value, ["feishu-app-secret-value", "sk-test-key-9"], f"output {name}")
    for r in run.resources:
        leaks += _scan(r.inputs, ["feishu-app-secret-value", "sk-test-key-9"], f"{r.typ} {r.name}")
    assert leaks == []
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert "feishu-app-secret-value" in env["AI_ASSISTANT_SECRET_VARS"]
    assert "sk-test-key-9" in env["AI_ASSISTANT_SECRET_VARS"]


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_inventory_lists_every_instance_by_role_zone_and_colour(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    text, secret = run.exports["inventory"]
    assert secret is False
    inv = yaml.safe_load(text)["all"]
    groups = inv["children"]
    instances = [r for r in run.of(INSTANCE[cloud]) if _role(r) != "bastion"]
    listed = {h for g in ("assistant", "data", "inference") for h in groups[g]["hosts"]}
    names = {r.props.get("tags", {}).get("Name") or r.props.get("instanceName") for r in instances}
    assert listed == names
    ips = {r.outputs["privateIp"] for r in instances}
    assert {v["ansible_host"] for g in ("assistant", "data", "inference") for v in groups[g]["hosts"].values()} == ips
    zones = config_for(cloud, tier)["zones"]
    zone_groups = {f"zone_{z.replace('-', '_')}" for z in zones}
    assert zone_groups <= set(groups)
    assert set().union(*(groups[g]["hosts"] for g in zone_groups)) == names
    assert set(groups["color_blue"]["hosts"]) == set(groups["assistant"]["hosts"])
    bastion = next(r for r in run.of(INSTANCE[cloud]) if _role(r) == "bastion")
    # The hand-off's own known_hosts file for both hops (accept-new: these mocked hosts have no Pulumi-known keys).
    opts = "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={{ ai_assistant_known_hosts }}"
    assert inv["vars"]["ansible_ssh_common_args"] == (
        f"{opts} -o ProxyCommand='ssh {opts} -W %h:%p -q ansible@{bastion.outputs['publicIp']}'"
    )
    assert groups["data"]["vars"]["redis_maxmemory"] == f"{CATALOGUE[tier].data.memory_limits_mib['redis']}mb"


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_a_nat_per_zone_and_every_egress_ip_is_a_stack_output(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    ips, secret = run.exports["egressIps"]
    assert secret is False and len(ips) == 2 and len(set(ips)) == 2
    assert run.exports["egressIp"] == (ips[0], False)
    zones = config_for(cloud, tier)["zones"]
    subnet_type = {"aws": "aws:ec2/subnet:Subnet", "alicloud": "alicloud:vpc/switch:Switch"}[cloud]
    subnet_zone = {r.id: r.props[ZONE_KEY[cloud]] for r in run.of(subnet_type)}
    private = {r.id for r in run.of(subnet_type) if "private" in r.name}
    if cloud == "aws":
        nats = run.of("aws:ec2/natGateway:NatGateway")
        nat_zone = {n.id: subnet_zone[n.props["subnetId"]] for n in nats}
        assert sorted(nat_zone.values()) == sorted(zones), "one NAT gateway in each zone"
        assert sorted(run.by_id(n.props["allocationId"]).outputs["publicIp"] for n in nats) == sorted(ips)
        # Each zone's private subnet routes 0.0.0.0/0 through its own zone's NAT.
        tables = {r.id: r.props for r in run.of("aws:ec2/routeTable:RouteTable")}
        for a in run.of("aws:ec2/routeTableAssociation:RouteTableAssociation"):
            if a.props["subnetId"] in private:
                [route] = tables[a.props["routeTableId"]]["routes"]
                assert nat_zone[route["natGatewayId"]] == subnet_zone[a.props["subnetId"]], a.name
    else:
        nats = run.of("alicloud:vpc/natGateway:NatGateway")
        nat_zone = {n.id: subnet_zone[n.props["vswitchId"]] for n in nats}
        assert sorted(nat_zone.values()) == sorted(zones)
        eips = {e.id: e.outputs["ipAddress"] for e in run.of("alicloud:ecs/eipAddress:EipAddress")}
        assoc = {
            a.props["instanceId"]: eips[a.props["allocationId"]]
            for a in run.of("alicloud:ecs/eipAssociation:EipAssociation")
        }
        assert sorted(assoc.values()) == sorted(ips) and set(assoc) == set(nat_zone)
        assert all(a.props["instanceType"] == "Nat" for a in run.of("alicloud:ecs/eipAssociation:EipAssociation"))
        snat = run.of("alicloud:vpc/snatEntry:SnatEntry")
        assert len(snat) == 2
        assert {e.props["sourceVswitchId"] for e in snat} == private
        assert sorted(e.props["snatIp"] for e in snat) == sorted(ips), "each zone's hosts leave through its own EIP"
        attached = {
            a.props["routeTableId"]: a.props["vswitchId"]
            for a in run.of("alicloud:vpc/routeTableAttachment:RouteTableAttachment")
        }
        assert set(attached.values()) == private
        for r in run.of("alicloud:vpc/routeEntry:RouteEntry"):
            assert r.props["destinationCidrblock"] == "0.0.0.0/0" and r.props["nexthopType"] == "NatGateway"
            assert nat_zone[r.props["nexthopId"]] == subnet_zone[attached[r.props["routeTableId"]]], r.name


def test_autoscaling_groups_per_colour_and_zone() -> None:
    run = run_program(config_for("aws", "standard", autoscaling=True))
    groups = run.of("aws:autoscaling/group:Group")
    t = CATALOGUE["standard"]
    assert len(groups) == 2
    for g in groups:
        assert (g.props["minSize"], g.props["desiredCapacity"], g.props["maxSize"]) == (
            t.assistant_per_zone,
            t.assistant_per_zone,
            t.assistant_max_per_zone,
        )
        assert g.props["healthCheckType"] == "ELB"
        assert len(g.props["targetGroupArns"]) == 1
    templates = run.of("aws:ec2/launchTemplate:LaunchTemplate")
    assert all(m["ebs"]["encrypted"] == "true" for lt in templates for m in lt.props["blockDeviceMappings"])
    assert all(lt.props["metadataOptions"]["httpTokens"] == "required" for lt in templates)
    assert [r for r in run.of(INSTANCE["aws"]) if _role(r) == "assistant"] == []
    dyn = yaml.safe_load(run.exports["dynamicInventory"][0])
    assert dyn["plugin"] == "amazon.aws.aws_ec2" and dyn["regions"] == ["ap-southeast-1"]
    assert dyn["filters"]["tag:ai-assistant:stack"] == "test"
    assert all(
        {"key": "ai-assistant:stack", "value": "test", "propagateAtLaunch": True} in g.props["tags"] for g in groups
    )
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert "amazon.aws.aws_ec2" in env["AI_ASSISTANT_DYNAMIC_INVENTORY"]
    assert env["AI_ASSISTANT_DYNAMIC_HOSTS"] == str(2 * t.assistant_per_zone)


ALI_GROUP = "alicloud:ess/scalingGroup:ScalingGroup"
ALI_TEMPLATE = "alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate"


@pytest.mark.parametrize("tier", TIERS)
def test_alicloud_scaling_groups_per_colour_and_zone(scaled_run: Get, tier: str) -> None:
    run = scaled_run("alicloud", tier)
    t = CATALOGUE[tier]
    zones = config_for("alicloud", tier)["zones"]
    groups = run.of(ALI_GROUP)
    assert len(groups) == 2  # one colour deployed, one group per zone
    templates = {r.id: r for r in run.of(ALI_TEMPLATE)}
    switches = {r.id: r.props for r in run.of("alicloud:vpc/switch:Switch")}
    # Data hosts sit in each zone's private vSwitch; the scaled assistant hosts belong there too.
    private_switch = {
        r.props["availabilityZone"]: r.props["vswitchId"] for r in run.of(INSTANCE["alicloud"]) if _role(r) == "data"
    }
    server_groups = {r.id: r.props for r in run.of("alicloud:alb/serverGroup:ServerGroup")}
    assistant_sg = next(
        r.id
        for r in run.of("alicloud:ecs/securityGroup:SecurityGroup")
        if r.props["tags"]["ai-assistant:role"] == "assistant"
    )
    seen_zones = []
    for g in groups:
        p = g.props
        assert (p["minSize"], p["desiredCapacity"], p["maxSize"]) == (
            t.assistant_per_zone,
            t.assistant_per_zone,
            t.assistant_max_per_zone,
        ), g.name
        assert p["healthCheckType"] == "ECS", g.name
        [vswitch] = p["vswitchIds"]
        zone = switches[vswitch]["zoneId"]
        assert vswitch == private_switch[zone], f"{g.name}: not in the private vSwitch of {zone}"
        seen_zones.append(zone)
        # The group joins its colour's server group (both zones' hosts), its servers weighted by their zone.
        [attach] = p["albServerGroups"]
        assert (attach["port"], attach["weight"]) == (443, 80 if zone == zones[0] else 20)
        target = server_groups[attach["albServerGroupId"]]
        assert target["tags"]["ai-assistant:color"] == p["tags"]["ai-assistant:color"]
        lt = templates[p["launchTemplateId"]].props
        assert p["launchTemplateVersion"] == "Latest"
        assert lt["instanceType"] == INSTANCE_TYPES["alicloud"][tier]["assistant"]
        assert lt["securityGroupIds"] == [assistant_sg]
        assert lt["vswitchId"] == vswitch and lt["zoneId"] == zone
        assert lt["systemDisk"]["encrypted"] is True and lt["systemDisk"]["category"] == "cloud_essd"
        assert [(d["size"], d["encrypted"]) for d in lt["dataDisks"]] == [(t.assistant.data_disk_gib, True)]
        assert (lt["httpEndpoint"], lt["httpTokens"]) == ("enabled", "required")
        assert lt["internetMaxBandwidthOut"] == 0
        assert lt["instanceChargeType"] == "PostPaid"
        assert lt["tags"] == {
            "ai-assistant:stack": "test",
            "ai-assistant:managed-by": "pulumi",
            "ai-assistant:role": "assistant",
            "ai-assistant:color": "blue",
            "ai-assistant:zone": zone,
        }
    assert sorted(seen_zones) == sorted(zones)
    assert [r for r in run.of(INSTANCE["alicloud"]) if _role(r) == "assistant"] == []


def test_alicloud_scaled_hosts_boot_with_the_fixed_hosts_user_data(stack_run: Get, scaled_run: Get) -> None:
    """The same first boot, plus the on-boot configuration (docs/adr/0039; tests/infra/test_onboot_alicloud.py)."""
    from infra.cloudinit import ONBOOT_CONFIG_PATH, ONBOOT_PACKAGES, ONBOOT_SCRIPT_PATH

    def without_onboot(text: str) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(text.split("\n", 1)[1])
        doc["packages"] = [p for p in doc["packages"] if p not in ONBOOT_PACKAGES["alicloud"]]
        onboot_files = (ONBOOT_SCRIPT_PATH, ONBOOT_CONFIG_PATH)
        doc["write_files"] = [w for w in doc["write_files"] if w["path"] not in onboot_files]
        doc["runcmd"] = [c for c in doc["runcmd"] if c != [ONBOOT_SCRIPT_PATH]]
        return doc

    fixed = {
        r.props["tags"]["ai-assistant:zone"]: yaml.safe_load(r.props["userData"].split("\n", 1)[1])
        for r in stack_run("alicloud", "standard").of(INSTANCE["alicloud"])
        if _role(r) == "assistant"
    }
    scaled = {
        r.props["tags"]["ai-assistant:zone"]: base64.b64decode(r.props["userData"]).decode()
        for r in scaled_run("alicloud", "standard").of(ALI_TEMPLATE)
    }
    assert all(ONBOOT_SCRIPT_PATH in text for text in scaled.values())
    assert {z: without_onboot(text) for z, text in scaled.items()} == fixed and len(scaled) == 2


def test_alicloud_autoscaling_keeps_weights_and_leaves_membership_to_the_groups(
    stack_run: Get, scaled_run: Get, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = scaled_run("alicloud", "basic")
    assert route(run, "alicloud") == route(stack_run("alicloud", "basic"), "alicloud")
    assert all("servers" not in r.props for r in run.of("alicloud:alb/serverGroup:ServerGroup"))
    # Scaling groups add servers the program never lists, so a refresh must not turn them into drift to remove.
    import pulumi_alicloud

    seen: dict[str, list[str] | None] = {}
    original = pulumi_alicloud.alb.ServerGroup.__init__

    def record(self: Any, name: str, *args: Any, opts: Any = None, **kwargs: Any) -> None:
        seen[name] = opts.ignore_changes if opts is not None else None
        original(self, name, *args, opts=opts, **kwargs)

    monkeypatch.setattr(pulumi_alicloud.alb.ServerGroup, "__init__", record)
    run_program(config_for("alicloud", "basic", autoscaling=True))
    assert len(seen) == len(COLORS) and all(v == ["servers"] for v in seen.values()), seen
    seen.clear()
    run_program(config_for("alicloud", "basic"))
    assert len(seen) == len(COLORS) and not any(seen.values()), seen


def test_alicloud_autoscaling_both_colours() -> None:
    run = run_program(config_for("alicloud", "basic", autoscaling=True, deployColors=["blue", "green"]))
    groups = run.of(ALI_GROUP)
    colours = sorted((g.props["tags"]["ai-assistant:color"], g.props["tags"]["ai-assistant:zone"]) for g in groups)
    z = config_for("alicloud", "basic")["zones"]
    assert colours == [("blue", z[0]), ("blue", z[1]), ("green", z[0]), ("green", z[1])]
    names = {r.props["launchTemplateName"] for r in run.of(ALI_TEMPLATE)}
    assert len(names) == 4, names


@pytest.mark.parametrize("tier", TIERS)
def test_alicloud_autoscaled_hosts_reach_ansible_through_a_dynamic_inventory(scaled_run: Get, tier: str) -> None:
    run = scaled_run("alicloud", tier)
    static = yaml.safe_load(run.exports["inventory"][0])["all"]["children"]
    assert static["assistant"]["hosts"] == {}
    assert set(static["data"]["hosts"]) == {"data-h", "data-i"}
    dyn = yaml.safe_load(run.exports["dynamicInventory"][0])
    assert dyn["plugin"] == "alibaba.alicloud.alicloud_ecs" and dyn["regions"] == ["cn-hangzhou"]
    assert dyn["filters"] == {
        "status": "Running",
        "tags": {"ai-assistant:role": "assistant", "ai-assistant:stack": "test"},
    }
    assert dyn["hostnames"] == ["instance_id"]
    assert dyn["compose"]["ansible_host"] == "private_ip_address"
    # The groups the plugin builds carry the static inventory's names, so group_vars and plays apply unchanged.
    assert {"key": "tags['ai-assistant:role']", "separator": "", "prefix": ""} in dyn["keyed_groups"]
    assert {"key": "tags['ai-assistant:color']", "prefix": "color"} in dyn["keyed_groups"]
    assert {"key": "availability_zone | replace('-', '_')", "prefix": "zone"} in dyn["keyed_groups"]
    env = unwrap(run.of("command:local:Command")[0].inputs["environment"])
    assert env["AI_ASSISTANT_DYNAMIC_INVENTORY"] == run.exports["dynamicInventory"][0]
    assert env["AI_ASSISTANT_DYNAMIC_HOSTS"] == str(2 * CATALOGUE[tier].assistant_per_zone)


def test_external_inference_has_no_gpu_host() -> None:
    run = run_program(
        config_for("alicloud", "standard", inference={"mode": "external", "url": "https://llm.example.com/v1"})
    )
    assert [r for r in run.of(INSTANCE["alicloud"]) if _role(r) == "inference"] == []
    inv = yaml.safe_load(run.exports["inventory"][0])["all"]
    assert inv["vars"]["ai_assistant_inference_url"] == "https://llm.example.com/v1"
    assert inv["children"]["inference"]["hosts"] == {}


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_load_balancer_checks_liveness_not_readiness(stack_run: Get, cloud: str) -> None:
    """/readyz includes the engine and the store: their outage must not mark (and with autoscaling, replace) every
    host. /healthz is the service's liveness endpoint (service/ai_assistant/app.py)."""
    if cloud == "aws":
        tgs = stack_run("aws", "basic").of("aws:lb/targetGroup:TargetGroup")
        assert len(tgs) == len(COLORS)
        assert {(t.props["healthCheck"]["path"], t.props["healthCheck"]["protocol"]) for t in tgs} == {
            ("/healthz", "HTTPS")
        }
    else:
        groups = stack_run("alicloud", "basic").of("alicloud:alb/serverGroup:ServerGroup")
        assert {s.props["healthCheckConfig"]["healthCheckPath"] for s in groups} == {"/healthz"}
    from ai_assistant import app as service_app

    assert '@app.get("/healthz"' in Path(service_app.__file__).read_text()


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_the_monitoring_host_reaches_both_colours_metrics(cloud: str) -> None:
    """Prometheus scrapes the blue and the green slot of every assistant host (playbooks/monitoring.yml): while green
    serves, a scrape of its port that the security group drops would page "assistant down" for a healthy host."""
    ports = {
        int(p)
        for p in (
            yaml.safe_load((REPO / "roles/assistant/defaults/main.yml").read_text())[k]
            for k in ("assistant_metrics_port", "assistant_green_metrics_port")
        )
    }
    opened = ports_between(run_program(config_for(cloud, "basic")), cloud, to="assistant", src="data")
    assert ports <= opened, f"metrics ports {sorted(ports - opened)} closed to the monitoring (data) host"


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_every_host_reaches_the_log_host(cloud: str) -> None:
    """Every host's journal-upload posts to journal-remote on the monitoring (data) host (playbooks/monitoring.yml):
    the port in roles/journal_remote's defaults must be open to it from each role's security group, the data hosts'
    own included (the second zone's data host)."""
    port = int(yaml.safe_load((REPO / "roles/journal_remote/defaults/main.yml").read_text())["journal_remote_port"])
    run = run_program(config_for(cloud, "basic"))
    for src in ("assistant", "data", "inference"):
        assert port in ports_between(run, cloud, to="data", src=src), f"{port} closed from {src} to the log host"
