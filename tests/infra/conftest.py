"""Shared, cached program runs: one mocked `pulumi up` per cloud x tier for the whole session."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.tiers import CLOUDS, TIERS
from tests.infra.harness import Run, config_for, run_program

CASES = [(c, t) for c in CLOUDS for t in TIERS]
_cache: dict[tuple[str, str], Run] = {}


@pytest.fixture(scope="session")
def stack_run() -> Callable[[str, str], Run]:
    def get(cloud: str, tier: str) -> Run:
        if (cloud, tier) not in _cache:
            _cache[(cloud, tier)] = run_program(config_for(cloud, tier))
        return _cache[(cloud, tier)]

    return get


def pytest_configure(config: pytest.Config) -> None:
    # pulumi-aws and pulumi-alicloud warn at import about their own deprecated aliases, which this program does not use.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_alicloud.*")
