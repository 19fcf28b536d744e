"""The example stack files at the root are real configs: the program runs with each of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.infra.harness import PROJECT, run_program

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(ROOT.glob("Pulumi.*.yaml"))


def test_project_file() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    assert project["main"] == "infra/"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    assert (ROOT / "infra" / "__main__.py").exists()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_stack_runs(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())["config"]
    assert all(k.startswith(f"{PROJECT}:") for k in raw), "every key is in the project's namespace"
    assert not any(isinstance(v, dict) and "secure" in v for v in raw.values()), "examples carry no secret"
    run = run_program({k.split(":", 1)[1]: v for k, v in raw.items()})
    assert run.exports["egressIp"][0]
    assert len(EXAMPLES) >= 2


def test_main_runs_as_the_pulumi_cli_runs_it() -> None:
    """infra/ executed as a script (runpy, like Pulumi's Python host): same resources and exports as main()."""
    import sys

    cfg = yaml.safe_load((ROOT / "Pulumi.example-aws.yaml").read_text())["config"]
    plain = {k.split(":", 1)[1]: v for k, v in cfg.items()}
    direct = run_program(plain)
    scripted = run_program(plain, via_main=True)
    assert sorted((r.typ, r.name) for r in scripted.resources) == sorted((r.typ, r.name) for r in direct.resources)
    assert set(scripted.exports) == set(direct.exports)
    assert str(ROOT / "infra") not in sys.path
