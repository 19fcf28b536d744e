"""The tier catalogue: one table of sizes, worker counts and memory limits, mapped to real instance types per cloud.

docs/infra.md renders the same table for people; tests/infra check that every mapped instance type really has the
vCPU and memory the tier promises and that the per-component memory limits fit inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Cloud = Literal["aws", "alicloud"]
TierName = Literal["basic", "standard", "enterprise"]
NodeRole = Literal["assistant", "data", "bastion", "inference"]

CLOUDS: tuple[Cloud, ...] = ("aws", "alicloud")
TIERS: tuple[TierName, ...] = ("basic", "standard", "enterprise")

# Memory the OS, sshd, node-exporter and the page cache floor keep on every host; limits are budgeted on top.
OS_RESERVE_MIB = 512


@dataclass(frozen=True)
class NodeSize:
    """What a tier asks of one host of a role: the smallest vCPU count and the exact memory."""

    vcpu: int
    memory_gib: float
    data_disk_gib: int
    # systemd MemoryMax per component on that host, in MiB (handed to the roles as variables).
    memory_limits_mib: dict[str, int]


@dataclass(frozen=True)
class Tier:
    name: TierName
    summary: str
    assistant: NodeSize
    data: NodeSize
    assistant_per_zone: int
    assistant_max_per_zone: int  # the autoscaling group's ceiling
    service_workers: int  # the text lane's workers (worker.concurrency)
    # The long-generation and media lanes' workers (lanes.*; docs/architecture.md, "Lanes"). Media stays at one
    # worker per vCPU or fewer: OCR and speech recognition are CPU-bound and load their models once per process.
    long_workers: int
    media_workers: int


# The seed sizes the assistant hosts at 1c2G / 2c4G / 4c8G. Shared state (Redis, Weaviate) lives on a separate data
# host per zone so that blue and green share it and a colour switch keeps conversations
# (docs/adr/0031-infra-topology.md).
CATALOGUE: dict[TierName, Tier] = {
    "basic": Tier(
        name="basic",
        summary="teams under 50 people",
        assistant=NodeSize(1, 2, 20, {"assistant": 1024, "nginx": 128}),
        data=NodeSize(2, 4, 40, {"redis": 512, "weaviate": 2048, "monitoring": 768}),
        assistant_per_zone=1,
        assistant_max_per_zone=2,
        service_workers=2,
        long_workers=1,
        media_workers=1,
    ),
    "standard": Tier(
        name="standard",
        summary="100+ concurrent conversations",
        assistant=NodeSize(2, 4, 40, {"assistant": 2560, "nginx": 256}),
        data=NodeSize(2, 8, 100, {"redis": 1024, "weaviate": 4608, "monitoring": 1536}),
        assistant_per_zone=1,
        assistant_max_per_zone=3,
        service_workers=4,
        long_workers=2,
        media_workers=1,
    ),
    "enterprise": Tier(
        name="enterprise",
        summary="complex business scenarios, several departments",
        assistant=NodeSize(4, 8, 80, {"assistant": 6144, "nginx": 512}),
        data=NodeSize(4, 16, 200, {"redis": 2048, "weaviate": 10240, "monitoring": 3072}),
        assistant_per_zone=2,
        assistant_max_per_zone=6,
        service_workers=8,
        long_workers=3,
        media_workers=2,
    ),
}

# (cloud, tier, role) -> instance type. Bastion and GPU inference hosts do not depend on the tier.
INSTANCE_TYPES: dict[Cloud, dict[TierName, dict[NodeRole, str]]] = {
    "aws": {
        "basic": {"assistant": "t3.small", "data": "t3.medium"},
        "standard": {"assistant": "c6i.large", "data": "m6i.large"},
        "enterprise": {"assistant": "c6i.xlarge", "data": "m6i.xlarge"},
    },
    "alicloud": {
        "basic": {"assistant": "ecs.s6-c1m2.small", "data": "ecs.c7.large"},
        "standard": {"assistant": "ecs.c7.large", "data": "ecs.g7.large"},
        "enterprise": {"assistant": "ecs.c7.xlarge", "data": "ecs.g7.xlarge"},
    },
}
# The shared Redis (queue, de-duplication, conversation memory) is managed, with a standby in the second zone, in
# every tier (docs/adr/0034-one-state-across-zones.md). Each class holds at least the tier's redis memory limit.
# Published memory (GiB): ElastiCache node types page (cache.t4g.small 1.37, cache.t4g.medium 3.09,
# cache.m7g.large 6.38); ApsaraDB for Redis Standard master-replica classes (1, 2, 4 GB).
REDIS_CLASSES: dict[Cloud, dict[TierName, tuple[str, float]]] = {
    "aws": {
        "basic": ("cache.t4g.small", 1.37),
        "standard": ("cache.t4g.medium", 3.09),
        "enterprise": ("cache.m7g.large", 6.38),
    },
    "alicloud": {
        "basic": ("redis.master.small.default", 1.0),
        "standard": ("redis.master.mid.default", 2.0),
        "enterprise": ("redis.master.stand.default", 4.0),
    },
}
BASTION_TYPES: dict[Cloud, str] = {"aws": "t3.nano", "alicloud": "ecs.t6-c1m1.large"}
GPU_TYPES: dict[Cloud, str] = {"aws": "g5.xlarge", "alicloud": "ecs.gn7i-c8g1.2xlarge"}
GPU_DISK_GIB = 200  # model weights of a 7-14B model in several quantisations, plus the container image

# Published specifications (vCPU, memory GiB) of every type above, from the providers' instance-type pages
# (AWS EC2 instance types; Alibaba Cloud ECS instance families), read 2026-11. The tests hold the catalogue to these.
INSTANCE_SPECS: dict[str, tuple[int, float]] = {
    "t3.nano": (2, 0.5),
    "t3.small": (2, 2),
    "t3.medium": (2, 4),
    "c6i.large": (2, 4),
    "c6i.xlarge": (4, 8),
    "m6i.large": (2, 8),
    "m6i.xlarge": (4, 16),
    "g5.xlarge": (4, 16),
    "ecs.s6-c1m2.small": (1, 2),
    "ecs.c7.large": (2, 4),
    "ecs.c7.xlarge": (4, 8),
    "ecs.g7.large": (2, 8),
    "ecs.g7.xlarge": (4, 16),
    "ecs.t6-c1m1.large": (2, 2),
    "ecs.gn7i-c8g1.2xlarge": (8, 30),
}


def instance_type(cloud: Cloud, tier: TierName, role: NodeRole) -> str:
    if role == "bastion":
        return BASTION_TYPES[cloud]
    if role == "inference":
        return GPU_TYPES[cloud]
    return INSTANCE_TYPES[cloud][tier][role]


def node_size(tier: TierName, role: NodeRole) -> NodeSize:
    t = CATALOGUE[tier]
    if role == "assistant":
        return t.assistant
    if role == "data":
        return t.data
    raise KeyError(f"role {role!r} has no tier-dependent size")
