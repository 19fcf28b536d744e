"""The tier catalogue against the providers' published instance specs, and the memory budget per host."""

from __future__ import annotations

import pytest

from infra.tiers import (
    BASTION_TYPES,
    CATALOGUE,
    CLOUDS,
    GPU_TYPES,
    INSTANCE_SPECS,
    INSTANCE_TYPES,
    OS_RESERVE_MIB,
    TIERS,
    node_size,
)


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("role", ["assistant", "data"])
def test_instance_type_gives_what_the_tier_promises(cloud: str, tier: str, role: str) -> None:
    size = node_size(tier, role)  # type: ignore[arg-type]
    itype = INSTANCE_TYPES[cloud][tier][role]  # type: ignore[index]
    vcpu, mem = INSTANCE_SPECS[itype]
    assert vcpu >= size.vcpu, f"{itype}: {vcpu} vCPU < {size.vcpu}"
    assert mem == size.memory_gib, f"{itype}: {mem} GiB != {size.memory_gib}"


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("role", ["assistant", "data"])
def test_memory_limits_fit_in_the_host(tier: str, role: str) -> None:
    size = node_size(tier, role)  # type: ignore[arg-type]
    budget = sum(size.memory_limits_mib.values()) + OS_RESERVE_MIB
    assert budget <= size.memory_gib * 1024, f"{tier}/{role}: {budget} MiB > {size.memory_gib} GiB"


def test_tiers_grow() -> None:
    b, s, e = (CATALOGUE[t] for t in TIERS)
    assert b.assistant.memory_gib < s.assistant.memory_gib < e.assistant.memory_gib
    assert b.service_workers < s.service_workers < e.service_workers
    assert all(t.assistant_max_per_zone >= t.assistant_per_zone for t in CATALOGUE.values())


def test_seed_sizes_for_the_assistant_hosts() -> None:
    # The seed: basic 1c2G, standard 2c4G, enterprise 4c8G.
    assert [(CATALOGUE[t].assistant.vcpu, CATALOGUE[t].assistant.memory_gib) for t in TIERS] == [(1, 2), (2, 4), (4, 8)]


def test_every_mapped_type_has_published_specs() -> None:
    used = {t for c in INSTANCE_TYPES.values() for r in c.values() for t in r.values()}
    used |= set(BASTION_TYPES.values()) | set(GPU_TYPES.values())
    assert used == set(INSTANCE_SPECS)


def test_docs_table_matches_the_catalogue() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "infra.md").read_text()
    for cloud in CLOUDS:
        for tier in TIERS:
            for role in ("assistant", "data"):
                assert f"`{INSTANCE_TYPES[cloud][tier][role]}`" in doc, f"{cloud}/{tier}/{role} missing from docs"  # type: ignore[index]
