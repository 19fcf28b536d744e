"""The test VM's image is built with every Debian package the converged roles install (issue 27).

apt inside the guest under software emulation costs minutes per package set; baked into the image (dpkg runs natively
in the mmdebstrap chroot) the first converge finds them installed and apt only confirms. The roles still declare and
install every package for real hosts. This check reads the apt tasks of the roles the VM converges, so a package added
to a role without being added to tests/roles/vm/image-packages.txt (which is the image cache key) fails here instead
of silently adding minutes to every CI run.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import jinja2
import yaml

from airgap.apt import flat_tasks

REPO = Path(__file__).resolve().parents[2]
IMAGE_PACKAGES = REPO / "tests/roles/vm/image-packages.txt"
# Roles the VM suite does not converge, each with why: their packages need not be in the image.
NOT_CONVERGED = {
    "grafana": "Grafana's apt repository is not reachable here (monitoring_grafana is false in the VM inventory)",
    "weaviate": "the Weaviate container cannot be pulled here; only check mode runs (containers-check.yml)",
}
# Task files that only run on hosts the VM is not (a GPU host running TGI under podman).
NOT_CONVERGED_FILES = {
    "roles/model_server/tasks/tgi.yml": "TGI needs a GPU and a registry; check mode only",
    "roles/model_server/tasks/nvidia.yml": "the NVIDIA driver and toolkit need a GPU host; check mode only",
    "roles/assistant/tasks/install_container.yml": (
        "the VM converges the wheel method; test_container_podman.py runs the container method with local podman"
    ),
}


def image_packages() -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in IMAGE_PACKAGES.read_text().splitlines())
    return {line for line in lines if line}


def _names(value: Any, role: Path) -> list[str]:
    """Package names from an apt task's `name`, a template rendered with the role's defaults (the VM inventory keeps
    the defaults that choose packages, e.g. volumes_fs_type: ext4)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if "{{" not in text:
        return [text]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 (package names, not HTML)
    rendered = env.from_string(text).render(defaults)
    parsed = ast.literal_eval(rendered) if rendered.startswith("[") else rendered
    return [str(v) for v in parsed] if isinstance(parsed, list) else [str(parsed)]


def role_packages() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for tasks_file in sorted(REPO.glob("roles/*/tasks/*.yml")):
        role = tasks_file.parents[1]
        rel = str(tasks_file.relative_to(REPO))
        if role.name in NOT_CONVERGED or rel in NOT_CONVERGED_FILES:
            continue
        for task in flat_tasks(yaml.safe_load(tasks_file.read_text())):
            apt = task.get("ansible.builtin.apt") or task.get("apt")
            if isinstance(apt, dict) and "name" in apt and apt.get("state", "present") == "present":
                for name in _names(apt["name"], role):
                    found.setdefault(name.split("=", 1)[0], set()).add(rel)
    return found


def test_the_parser_finds_the_roles_packages() -> None:
    """Guards the check below against reading nothing: packages that are known to be installed by the roles."""
    found = role_packages()
    assert {"nginx", "redis-server", "nftables", "auditd", "e2fsprogs", "prometheus"} <= found.keys(), found


def test_every_package_the_converged_roles_install_is_baked_into_the_vm_image() -> None:
    missing = {name: sorted(files) for name, files in role_packages().items() if name not in image_packages()}
    assert not missing, (
        f"add these to {IMAGE_PACKAGES.relative_to(REPO)} (installed by the roles, not baked into the image): {missing}"
    )
