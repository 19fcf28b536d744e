"""Shared, cached program runs: one mocked `pulumi up` per cloud x tier for the whole session."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.tiers import CLOUDS, TIERS
from tests.infra.harness import Run, config_for, run_program

CASES = [(c, t) for c in CLOUDS for t in TIERS]
_cache: dict[tuple[str, str, bool], Run] = {}


def _cached(cloud: str, tier: str, autoscaling: bool) -> Run:
    if (cloud, tier, autoscaling) not in _cache:
        overrides = {"autoscaling": True} if autoscaling else {}
        _cache[(cloud, tier, autoscaling)] = run_program(config_for(cloud, tier, overrides))
    return _cache[(cloud, tier, autoscaling)]


@pytest.fixture(scope="session")
def stack_run() -> Callable[[str, str], Run]:
    return lambda cloud, tier: _cached(cloud, tier, False)


@pytest.fixture(scope="session")
def scaled_run() -> Callable[[str, str], Run]:
    """The same program with `autoscaling: true`: assistant hosts in scaling groups instead of fixed instances."""
    return lambda cloud, tier: _cached(cloud, tier, True)


def pytest_configure(config: pytest.Config) -> None:
    # pulumi-aws and pulumi-alicloud warn at import about their own deprecated aliases, which this program does not use.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_alicloud.*")
