"""Embedders and vector stores are extension points: the built-ins are declared as entry points in pyproject.toml
(groups ai_assistant.embedders / ai_assistant.vector_stores) and resolve to the same factories the code uses."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from ai_assistant.knowledge import embedders, stores


@pytest.mark.parametrize(
    ("group", "builtin"),
    [("ai_assistant.embedders", embedders.BUILTIN), ("ai_assistant.vector_stores", stores.BUILTIN)],
)
def test_builtin_entry_points_resolve_to_the_builtin_factories(group: str, builtin: dict) -> None:
    declared = {ep.name: ep for ep in entry_points(group=group)}
    if not set(builtin) <= set(declared):
        pytest.skip(
            f"{group} entry points not declared in the installed package metadata yet "
            f"(pyproject.toml, then `pip install -e .`); declared: {sorted(declared)}"
        )
    for name, factory in builtin.items():
        assert declared[name].load() == factory, name  # == : a classmethod gives a new bound object per access
