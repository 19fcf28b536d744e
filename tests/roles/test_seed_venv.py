"""roles/assistant/files/seed_venv.py against real virtualenvs and the real uv the roles install with (its version
pinned in pyproject's dev extra as in airgap/wheels.py), without a VM: deploy.yml's idle colour starts as a
hard-linked copy of the serving colour's venv. The copy must run as a venv of its own (its scripts point at it), an
upgrade in it must leave the serving colour's files alone, and it must refuse what it cannot copy honestly. The deploy
itself, with the seed, runs in tests/roles/test_vm_bluegreen.py."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "roles/assistant/files/seed_venv.py"
PYTHON = sys.base_prefix + "/bin/python3"
UV = Path(sys.prefix) / "bin/uv"


def _wheel(where: Path, version: str) -> Path:
    """A minimal wheel of the package `seeddemo` with a console script `seeddemo` that prints its version."""
    name = f"seeddemo-{version}"
    files = {
        "seeddemo/__init__.py": f'VERSION = "{version}"\n\ndef main() -> None:\n    print(VERSION)\n',
        f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: seeddemo\nVersion: {version}\n",
        f"{name}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{name}.dist-info/entry_points.txt": "[console_scripts]\nseeddemo = seeddemo:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}.dist-info/RECORD,,")
    wheel = where / f"seeddemo-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{name}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    # Without the test run's PYTHONPATH (this checkout's service/), which every venv here would see as installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, env=env)


def _seed(serving: Path, incoming: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    proc = _run(PYTHON, SEED, serving, incoming)
    return proc, json.loads(proc.stdout)


def _uv_pip(venv: Path, command: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """As roles/assistant/tasks/install.yml runs it."""
    return _run(UV, "pip", command, f"--python={venv}/bin/python", "--no-cache", *args)


def test_the_uv_here_is_the_one_the_hosts_get() -> None:
    from airgap.wheels import UV_VERSION

    assert _run(UV, "--version").stdout.split()[:2] == ["uv", UV_VERSION]


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv made as the role makes it (python3 -m venv --without-pip, then uv), with seeddemo 1.0 installed."""
    root = tmp_path_factory.mktemp("seed")
    venv = root / "venv"
    made = _run(PYTHON, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    (root / "wheels").mkdir()
    for version in ("1.0", "2.0"):
        _wheel(root / "wheels", version)
    installed = _uv_pip(
        venv, "install", "--no-index", "--find-links", root / "wheels", "--compile-bytecode", "seeddemo==1.0"
    )
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_copy_is_a_venv_of_its_own_and_an_upgrade_in_it_leaves_the_serving_one_alone(serving: Path) -> None:
    # venv-green: a name that starts with the serving venv's, which the path rewrite must not match twice.
    incoming = serving.with_name("venv-green")
    proc, out = _seed(serving, incoming)
    assert proc.returncode == 0 and out["changed"] is True, proc.stdout + proc.stderr
    for script in ("seeddemo",):
        first = (incoming / "bin" / script).read_text().splitlines()[0]
        assert first.startswith(f"#!{incoming}/bin/python"), f"{script}: {first}"
        assert f"{serving}/" not in (incoming / "bin" / script).read_text()
    assert f'VIRTUAL_ENV="{incoming}"' in (incoming / "bin/activate").read_text()
    prefix = _run(incoming / "bin/python", "-c", "import sys, seeddemo; print(sys.prefix, seeddemo.__file__)")
    where, module_file = prefix.stdout.split()
    assert where == str(incoming) and module_file.startswith(f"{incoming}/"), prefix.stdout + prefix.stderr
    # The files are shared until one colour changes them.
    module = "lib/python{}.{}/site-packages/seeddemo/__init__.py".format(*sys.version_info[:2])
    assert (incoming / module).stat().st_ino == (serving / module).stat().st_ino

    compiled = next((serving / module).parent.glob("__pycache__/__init__.*.pyc"))
    assert compiled.stat().st_ino == next((incoming / module).parent.glob("__pycache__/*.pyc")).stat().st_ino
    upgraded = _uv_pip(
        incoming,
        "install",
        "--no-index",
        "--find-links",
        serving.parent / "wheels",
        "--compile-bytecode",
        "seeddemo==2.0",
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert _run(incoming / "bin/seeddemo").stdout.strip() == "2.0"
    assert _run(serving / "bin/seeddemo").stdout.strip() == "1.0", "the upgrade in the copy changed the serving venv"
    assert 'VERSION = "1.0"' in (serving / module).read_text()
    assert "1.0" in _run(serving / "bin/python", "-c", "import seeddemo; print(seeddemo.VERSION)").stdout
    assert (
        compiled.exists()
        and compiled.read_bytes() != next((incoming / module).parent.glob("__pycache__/*.pyc")).read_bytes()
    )
    check = _uv_pip(serving, "check")
    assert check.returncode == 0, check.stdout

    # Second run: the incoming venv exists, nothing changes (deploy.yml's `creates` skips it before that).
    again, out = _seed(serving, incoming)
    assert again.returncode == 0 and out["changed"] is False, again.stdout


def test_a_serving_venv_of_another_python_is_not_copied(serving: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _run("cp", "-a", serving, other)
    cfg = other / "pyvenv.cfg"
    cfg.write_text(
        "\n".join("version = 3.9.2" if line.startswith("version") else line for line in cfg.read_text().splitlines())
    )
    proc, out = _seed(other, tmp_path / "venv-green")
    assert proc.returncode == 0 and out["changed"] is False
    assert "Python 3.9.2" in str(out["msg"])
    assert not (tmp_path / "venv-green").exists()


def test_without_a_serving_venv_nothing_is_made(tmp_path: Path) -> None:
    proc, out = _seed(tmp_path / "venv", tmp_path / "venv-green")
    assert proc.returncode == 0 and out["changed"] is False
    assert "has no python" in str(out["msg"])
    assert not (tmp_path / "venv-green").exists()


@pytest.mark.parametrize("argv", [[], ["/x/venv"], ["/x/venv", "/x/venv"]], ids=["none", "one", "same"])
def test_bad_arguments_get_one_line_and_change_nothing(argv: list[str]) -> None:
    proc = _run(PYTHON, SEED, *argv)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["failed"] is True
    assert "Traceback" not in proc.stderr and len(proc.stdout.strip().splitlines()) == 1
