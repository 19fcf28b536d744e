"""Checksums everywhere a converge downloads something (issue 22 item 5), and the roles' packages all known to the
bundle: static checks over roles/*/tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from airgap import apt
from tests.bundle.conftest import REPO


def _tasks() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")) + sorted(REPO.glob("roles/*/handlers/*.yml")):
        for task in apt.flat_tasks(yaml.safe_load(path.read_text())):
            yield path, task


def _args(task: dict[str, Any], *modules: str) -> dict[str, Any] | None:
    for module in modules:
        if module in task:
            value = task[module]
            return value if isinstance(value, dict) else {"_raw": value}
    return None


def test_every_get_url_is_checked() -> None:
    """A sha256 on the download itself, or (a signing key) a fingerprint assert on what was downloaded, in the same
    file, before the key is put where apt reads it."""
    found = 0
    for path, task in _tasks():
        args = _args(task, "ansible.builtin.get_url", "get_url")
        if args is None:
            continue
        found += 1
        if "checksum" in args:
            assert str(args["checksum"]).startswith("sha256:"), f"{path}: {task['name']}: checksum is not sha256"
            continue
        tasks = yaml.safe_load(path.read_text())
        asserts = [t for t in tasks if "ansible.builtin.assert" in t and "fingerprint" in str(t)]
        assert asserts, f"{path}: {task['name']!r} downloads with neither a sha256 nor a fingerprint check"
        names = [t["name"] for t in tasks]
        installs = [i for i, t in enumerate(tasks) if "ansible.builtin.copy" in t and ".download" in str(t)]
        assert installs and names.index(asserts[0]["name"]) < installs[0], f"{path}: key installed before its check"
    assert found >= 2, "the model download and Grafana's key: the scan found neither"


def test_no_apt_key_and_no_repository_key_fetched_by_url() -> None:
    """apt_key trusts a key for every repository; a signed_by URL is fetched with no check at all."""
    for path, task in _tasks():
        assert _args(task, "ansible.builtin.apt_key", "apt_key") is None, f"{path}: {task['name']} uses apt_key"
        repo = _args(task, "ansible.builtin.deb822_repository")
        if repo is not None:
            assert str(repo["signed_by"]).startswith("{{ __") or str(repo["signed_by"]).startswith("/"), (
                f"{path}: {task['name']}: signed_by must be the verified local keyring, not a URL"
            )


def test_grafana_key_is_pinned_by_fingerprint() -> None:
    defaults = yaml.safe_load((REPO / "roles/grafana/defaults/main.yml").read_text())
    fingerprint = defaults["grafana_apt_key_fingerprint"]
    assert len(fingerprint) == 40 and int(fingerprint, 16) > 0


def test_unarchive_and_copy_sources_are_local() -> None:
    """Nothing else downloads at converge: unarchive/copy read the controller's files (the bundle, the wheels)."""
    for path, task in _tasks():
        args = _args(task, "ansible.builtin.unarchive", "ansible.builtin.copy")
        if args and "src" in args:
            assert "://" not in str(args["src"]), f"{path}: {task['name']} fetches {args['src']}"


def test_pip_never_reaches_an_index() -> None:
    for path, task in _tasks():
        if _args(task, "ansible.builtin.pip") is not None:
            assert task.get("environment", {}).get("PIP_NO_INDEX") == "1", f"{path}: {task['name']} may reach PyPI"


def test_every_apt_task_is_in_the_bundle() -> None:
    """role_packages() refuses a templated name it cannot expand; each role's packages land in the bundle's list."""
    per_role = apt.role_packages()
    everything = set(apt.all_packages())
    for path, task in _tasks():
        args = _args(task, "ansible.builtin.apt")
        if args and "name" in args:
            assert path.parts[-3] in per_role, f"{path}: {task['name']} installs packages the bundle does not know"
    for must in ("nginx", "redis-server", "nftables", "podman", "python3-venv", "certbot", "restic", "prometheus"):
        assert must in everything
    assert "grafana" not in everything, "grafana is not a Debian package: it comes in with build-bundle --deb"
