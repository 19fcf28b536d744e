"""A bundle that must not be used is refused with one line naming what is wrong: by scripts/verify-bundle, and by the
base role's preflight before anything on the host changes (ansible-playbook against localhost in check mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from airgap import manifest
from airgap.build import version
from airgap.manifest import BundleError, verify
from tests.bundle.conftest import REPO, SignedKey, make_small_bundle

VENV_BIN = Path(sys.executable).parent
OTHER_FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


def _flip_a_byte(root: Path) -> None:
    path = root / "models" / "model.gguf"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


def _tamper_manifest(root: Path) -> None:
    """A manifest edited to match a changed file: the checksums agree, the signature does not."""
    _flip_a_byte(root)
    data = json.loads((root / manifest.MANIFEST).read_text())
    data["files"]["models/model.gguf"]["sha256"] = manifest.sha256(root / "models" / "model.gguf")
    (root / manifest.MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# case -> (what is done to a good bundle, the fingerprint the operator expects, the line that must come back)
CASES: dict[str, tuple[Callable[[Path], None], str | None, str]] = {
    "other-version": (lambda root: None, None, "bundle is for version 0.0.1, this checkout is"),
    "bad-checksum": (_flip_a_byte, None, "models/model.gguf: sha256 mismatch with manifest.json"),
    "missing-file": (
        lambda root: (root / "wheels" / "example-1.0-py3-none-any.whl").unlink(),
        None,
        "wheels/example-1.0-py3-none-any.whl: missing from the bundle",
    ),
    "missing-image-archive": (
        lambda root: (root / "images" / "ai-assistant-0.1.0.oci.tar").unlink(),
        None,
        "images/ai-assistant-0.1.0.oci.tar: missing from the bundle",
    ),
    "truncated-file": (
        lambda root: (root / "models" / "model.gguf").write_bytes(b"short"),
        None,
        "models/model.gguf: size 5, manifest says 8192",
    ),
    "unlisted-file": (
        lambda root: (root / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x"),
        None,
        "wheels/evil-1.0-py3-none-any.whl: not listed in manifest.json",
    ),
    "no-manifest": (lambda root: (root / manifest.MANIFEST).unlink(), None, "manifest.json: missing"),
    "broken-manifest": (lambda root: (root / manifest.MANIFEST).write_text("{"), None, "manifest.json: not valid JSON"),
    "other-key": (lambda root: None, OTHER_FINGERPRINT, f"is not the expected {OTHER_FINGERPRINT}"),
    "tampered-manifest": (_tamper_manifest, "", "manifest.json.asc: bad signature over manifest.json"),
    "unsigned": (lambda root: (root / manifest.SIGNATURE).unlink(), "", "manifest.json.asc: missing"),
}


def _bad_bundle(case: str, tmp: Path, key: SignedKey) -> tuple[Path, str | None]:
    change, fingerprint, _ = CASES[case]
    root = make_small_bundle(tmp / case, key, for_version="0.0.1" if case == "other-version" else None)
    change(root)
    # "" means: the bundle's own, genuine key (the operator checked the right fingerprint; the bundle is still bad).
    return root, key.fingerprint if fingerprint == "" else fingerprint


def test_a_good_bundle_verifies_with_its_signature(tmp_path: Path, signing_key: SignedKey) -> None:
    root = make_small_bundle(tmp_path / "good", signing_key)
    done = verify(root, version=version(), fingerprint=signing_key.fingerprint)
    assert done.fingerprint == signing_key.fingerprint
    # Every file but the manifest and its signature, SHA256SUMS included.
    assert done.files == len([p for p in root.rglob("*") if p.is_file()]) - 2


def test_sha256sums_is_what_sha256sum_checks(tmp_path: Path, signing_key: SignedKey) -> None:
    root = make_small_bundle(tmp_path / "good", signing_key)
    assert subprocess.run(["sha256sum", "--quiet", "-c", manifest.SUMS], cwd=root).returncode == 0
    _flip_a_byte(root)
    assert subprocess.run(["sha256sum", "--quiet", "-c", manifest.SUMS], cwd=root, capture_output=True).returncode != 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_bundle_refuses_with_one_line(case: str, tmp_path: Path, signing_key: SignedKey) -> None:
    root, fingerprint = _bad_bundle(case, tmp_path, signing_key)
    with pytest.raises(BundleError) as caught:
        verify(root, version=version(), fingerprint=fingerprint)
    assert CASES[case][2] in str(caught.value)
    args = [str(REPO / "scripts" / "verify-bundle"), str(root)] + (
        ["--fingerprint", fingerprint] if fingerprint else []
    )
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env={"PATH": f"{VENV_BIN}:/usr/bin:/bin"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and CASES[case][2] in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_verify_bundle_wants_the_unpacked_directory(tmp_path: Path) -> None:
    archive = tmp_path / "ai-assistant-bundle-0.1.0.tar"
    archive.write_bytes(b"")
    done = subprocess.run([str(REPO / "scripts" / "verify-bundle"), str(archive)], capture_output=True, text=True)
    assert done.returncode == 2 and "unpack it first (tar xf ai-assistant-bundle-0.1.0.tar)" in done.stderr


ROLE_CASES = ("other-version", "bad-checksum", "missing-file", "tampered-manifest", "other-key")


def _check_mode_on_localhost(playbook: list[dict[str, Any]], path: Path) -> subprocess.CompletedProcess[str]:
    """The real ansible-playbook with the repository's ansible.cfg, in check mode against this machine (unchanged)."""
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    env = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(path.parent),
    }
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check", str(path)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def role_results(tmp_path_factory: pytest.TempPathFactory, signing_key: SignedKey) -> dict[str, str]:
    """One ansible-playbook run: the base role's bundle tasks with each bad bundle, against localhost in check mode.
    A case the role does not refuse records NOT REFUSED (and check mode keeps this machine unchanged)."""
    work = tmp_path_factory.mktemp("bundle-role")
    out = work / "results.json"
    tasks: list[dict[str, object]] = []
    cases = {**{c: _bad_bundle(c, work, signing_key) for c in ROLE_CASES}}
    cases["no-fingerprint"] = (make_small_bundle(work / "no-fingerprint", signing_key), None)
    for case, (root, fingerprint) in cases.items():
        # The role always wants the fingerprint; the cases without one use the bundle's genuine key.
        if case != "no-fingerprint":
            fingerprint = fingerprint or signing_key.fingerprint
        variables = {"base_bundle_dir": str(root), "base_bundle_fingerprint": fingerprint or ""}
        tasks.append(
            {
                "name": case,
                "block": [
                    {
                        "name": f"{case}: include",
                        "ansible.builtin.include_role": {"name": "base", "tasks_from": "bundle"},
                        "vars": variables,
                    },
                    {
                        "name": f"{case}: not refused",
                        "ansible.builtin.set_fact": {
                            "results": "{{ results | combine({'" + case + "': 'NOT REFUSED'}) }}"
                        },
                    },
                ],
                "rescue": [
                    {
                        "name": f"{case}: record",
                        "ansible.builtin.set_fact": {
                            "results": "{{ results | combine({'"
                            + case
                            + "': ansible_failed_result.msg | default('') | string}) }}"
                        },
                    }
                ],
            }
        )
    tasks.append(
        {
            "name": "write",
            "ansible.builtin.copy": {"content": "{{ results | to_json }}", "dest": str(out)},
            "check_mode": False,
        }
    )
    playbook = [
        {
            "name": "bad bundles",
            "hosts": "localhost",
            "gather_facts": False,
            "become": False,
            "vars": {"results": {}},
            "tasks": tasks,
        }
    ]
    proc = _check_mode_on_localhost(playbook, work / "bad.yml")
    assert out.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    return dict(json.loads(out.read_text()))


@pytest.mark.parametrize("case", [*ROLE_CASES, "no-fingerprint"])
def test_base_role_refuses_a_bad_bundle_before_changing_anything(case: str, role_results: dict[str, str]) -> None:
    msg = role_results[case]
    expected = CASES[case][2] if case in CASES else "base_bundle_fingerprint: the bundle key's 40-hex-digit fingerprint"
    assert msg != "NOT REFUSED", f"{case}: the base role accepted a bad bundle"
    assert expected in msg and "\n" not in msg.strip(), msg
    assert "Traceback" not in msg


def test_base_role_checks_the_bundle_first() -> None:
    """Before accounts or packages: a bad bundle leaves the host as it was."""
    main = yaml.safe_load((REPO / "roles/base/tasks/main.yml").read_text())
    assert main[0]["ansible.builtin.import_tasks"] == "bundle.yml"
    tasks = yaml.safe_load((REPO / "roles/base/tasks/bundle.yml").read_text())
    changing = [t["name"] for t in tasks if not {"ansible.builtin.assert", "ansible.builtin.command"} & t.keys()]
    first_change = next(i for i, t in enumerate(tasks) if t["name"] == changing[0])
    refuse = next(i for i, t in enumerate(tasks) if t["name"] == "Refuse a bad bundle")
    assert refuse < first_change, "the bundle must be refused before the first task that changes the host"


def test_without_bundle_variables_nothing_is_written() -> None:
    """Bundle unset: every bundle task is skipped except removing a bundle-only apt.conf left by an earlier run."""
    tasks = yaml.safe_load((REPO / "roles/base/tasks/bundle.yml").read_text())
    for task in tasks:
        when = task.get("when")
        conditions = when if isinstance(when, list) else [when]
        if "base_bundle_dir | length == 0" in conditions:
            assert task["ansible.builtin.file"]["state"] == "absent", task["name"]
        else:
            assert "base_bundle_dir | length > 0" in conditions, f"{task['name']}: runs without a bundle"


def test_without_a_bundle_the_bundle_tasks_run_and_skip(tmp_path: Path) -> None:
    """The real play, bundle unset (every converge without one): nothing may template the bundle's manifest lookup.
    A task's loop is templated before its `when`: an unguarded lookup failed the first converge ('/manifest.json')."""
    playbook = [
        {
            "name": "no bundle",
            "hosts": "localhost",
            "gather_facts": False,
            "become": False,
            "tasks": [
                {"name": "bundle tasks", "ansible.builtin.include_role": {"name": "base", "tasks_from": "bundle"}}
            ],
        }
    ]
    proc = _check_mode_on_localhost(playbook, tmp_path / "none.yml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "failed=0" in proc.stdout and "changed=0" in proc.stdout, proc.stdout[-2000:]
