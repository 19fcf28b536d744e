"""Nothing stateful is replaced by accident: the config changes operators make every day plan no replacement.

Pulumi's mocks cannot diff against a provider schema, so the check is stricter than a real preview: between a run
with the base config and a run with the change, a stateful resource must keep its type, name and parent (its URN)
and every input that its `ignore_changes` does not cover. Generated secrets are compared by their generator's name
(in a real stack they live in state and do not change between runs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.infra.conftest import CASES
from tests.infra.harness import Res, Run, config_for, run_program

Get = Callable[[str, str], Run]

INSTANCE = {"aws": "aws:ec2/instance:Instance", "alicloud": "alicloud:ecs/instance:Instance"}
BUCKET = {"aws": "aws:s3/bucket:Bucket", "alicloud": "alicloud:oss/bucket:Bucket"}
REDIS = {"aws": "aws:elasticache/replicationGroup:ReplicationGroup", "alicloud": "alicloud:kvstore/instance:Instance"}
NEW_IMAGE = {"aws": "ami-0fedcba9876543210", "alicloud": "debian_12_10_x64_20G_alibase_20250601.vhd"}

# (what the operator does, the config keys it changes)
DAILY: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    # AWS has no zone weights (a target group cannot weigh its targets): the zones share by hosts there.
    ("zone weights", lambda cloud: {"standbyWeight": 35} if cloud == "alicloud" else {}),
    ("prepare green", lambda cloud: {"deployColors": ["blue", "green"]}),
    ("canary", lambda cloud: {"deployColors": ["blue", "green"], "canaryWeight": 10}),
    ("switch colour", lambda cloud: {"deployColors": ["blue", "green"], "activeColor": "green"}),
    ("retire blue", lambda cloud: {"deployColors": ["green"], "activeColor": "green"}),
    ("image bump", lambda cloud: {"imageId": NEW_IMAGE[cloud]}),
    ("zone failover", lambda cloud: {"failover": True}),
    ("retention", lambda cloud: {"backupRetentionDays": 45}),
    ("autoscaling on", lambda cloud: {"autoscaling": True}),
]


def stateful(run: Run, cloud: str) -> list[Res]:
    """Data hosts (Weaviate, monitoring, backup staging), the backup buckets and the managed Redis."""
    data_hosts = [r for r in run.of(INSTANCE[cloud]) if (r.props.get("tags") or {}).get("ai-assistant:role") == "data"]
    return [*data_hosts, *run.of(BUCKET[cloud]), *run.of(REDIS[cloud])]


# Inputs the provider updates in place (documented as updatable on the resource's registry page), so a change is
# not a replacement: https://www.pulumi.com/registry/packages/aws/api-docs/s3/bucket/ (tags),
# https://www.pulumi.com/registry/packages/alicloud/api-docs/oss/bucket/ (lifecycle rules, versioning, tags, SSE).
IN_PLACE: dict[str, set[str]] = {
    "aws:s3/bucket:Bucket": {"tags"},
    "alicloud:oss/bucket:Bucket": {"lifecycleRules", "versioning", "tags", "serverSideEncryptionRule"},
}


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m[1].upper(), name)


def _normalise(value: Any, run: Run) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, run) for v in value]
    if isinstance(value, str):
        for secret, name in run.secret_names.items():
            value = value.replace(secret, f"<generated {name}>")
    return value


def _parent(run: Run, r: Res) -> str:
    parent = run.opts(r).parent
    return f"{type(parent).__name__}:{getattr(parent, '_name', '')}" if parent is not None else ""


def planned_replacements(before: Run, after: Run, cloud: str) -> list[str]:
    problems = []
    for old in stateful(before, cloud):
        found = [r for r in after.of(old.typ) if r.name == old.name]
        if len(found) != 1:
            problems.append(f"{old.typ} {old.name}: gone (it would be deleted)")
            continue
        new = found[0]
        if _parent(before, old) != _parent(after, new):
            problems.append(f"{old.typ} {old.name}: parent changed, a new URN (replacement)")
        ignored = {_camel(k) for k in after.opts(new).ignore_changes or []} | IN_PLACE.get(old.typ, set())
        a, b = _normalise(old.props, before), _normalise(new.props, after)
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ignored)
        if changed:
            problems.append(f"{old.typ} {old.name}: inputs {changed} change")
    return problems


@pytest.mark.parametrize("change", DAILY, ids=[c[0] for c in DAILY])
@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_daily_changes_plan_no_replacement_of_stateful_resources(
    stack_run: Get, cloud: str, tier: str, change: tuple[str, Callable[[str], dict[str, Any]]]
) -> None:
    before = stack_run(cloud, tier)
    after = run_program(config_for(cloud, tier, change[1](cloud)))
    assert stateful(before, cloud), "nothing stateful found: the test would pass vacuously"
    assert planned_replacements(before, after, cloud) == []


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_the_check_sees_a_replacing_change(stack_run: Get, cloud: str) -> None:
    """The check can fail: moving the deployment to other zones deletes the data host of the zone it leaves."""
    before = stack_run(cloud, "standard")
    zones = {"aws": ["ap-southeast-1b", "ap-southeast-1c"], "alicloud": ["cn-hangzhou-i", "cn-hangzhou-j"]}[cloud]
    problems = planned_replacements(before, run_program(config_for(cloud, "standard", zones=zones)), cloud)
    assert any("gone" in p for p in problems), problems


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_stateful_resources_are_protected(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    unprotected = [f"{r.typ} {r.name}" for r in stateful(run, cloud) if not run.opts(r).protect]
    assert unprotected == []
    kept = [r.name for r in run.of(BUCKET[cloud]) if run.opts(r).retain_on_delete]
    assert len(kept) == 2, "both backup buckets survive `pulumi destroy`"


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_data_disks_outlive_their_instance(stack_run: Get, cloud: str, tier: str) -> None:
    run = stack_run(cloud, tier)
    for r in run.of(INSTANCE[cloud]):
        role = (r.props.get("tags") or {}).get("ai-assistant:role")
        disks = r.props.get("ebsBlockDevices" if cloud == "aws" else "dataDisks") or []
        flag = "deleteOnTermination" if cloud == "aws" else "deleteWithInstance"
        if role == "data":
            assert disks and all(d[flag] is False for d in disks), r.name
        elif role in ("assistant", "inference"):
            assert all(d[flag] is True for d in disks), f"{r.name}: stateless disks go with the host"


@pytest.mark.parametrize(("cloud", "tier"), CASES)
def test_images_are_pinned_in_the_stack_config(stack_run: Get, scaled_run: Get, cloud: str, tier: str) -> None:
    image = config_for(cloud, tier)["imageId"]
    for run in (stack_run(cloud, tier), scaled_run(cloud, tier)):
        assert run.invokes == [], "no image (or anything else) is looked up at plan time"
        key = {"aws": "ami", "alicloud": "imageId"}[cloud]
        used = {r.props[key] for r in run.of(INSTANCE[cloud])}
        template = {
            "aws": "aws:ec2/launchTemplate:LaunchTemplate",
            "alicloud": "alicloud:ecs/ecsLaunchTemplate:EcsLaunchTemplate",
        }
        used |= {r.props["imageId"] for r in run.of(template[cloud])}
        assert used == {image}
