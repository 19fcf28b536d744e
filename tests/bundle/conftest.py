"""Bundles for the tests: a small signed one made here in seconds (bad-input cases), and the real one from `make bundle`
(built once per session; its slow parts, the wheels and the Debian packages, are cached under ~/.cache/ai-assistant)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from airgap import apt, manifest
from airgap.build import version

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SignedKey:
    home: Path
    fingerprint: str


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SignedKey:
    home = tmp_path_factory.mktemp("gnupg")
    return SignedKey(home, apt.new_key(home))


def make_small_bundle(root: Path, key: SignedKey, *, for_version: str | None = None) -> Path:
    """A bundle with a few real files, the manifest, its signature and the keyring, as build-bundle writes them."""
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "example-1.0-py3-none-any.whl").write_bytes(os.urandom(4096))
    (root / "models").mkdir()
    (root / "models" / "model.gguf").write_bytes(os.urandom(8192))
    (root / "images").mkdir()
    (root / "images" / "ai-assistant-0.1.0.oci.tar").write_bytes(os.urandom(2048))
    (root / "README.md").write_text("a test bundle\n")
    apt.gpg(key.home, "--yes", "--output", str(root / manifest.KEYRING), "--export", key.fingerprint)
    manifest.write(root, version=for_version or version(), revision="test", extra={"fingerprint": key.fingerprint})
    apt.gpg(
        key.home, "--yes", "--local-user", key.fingerprint, "--armor", "--detach-sign",
        "--output", str(root / manifest.SIGNATURE), str(root / manifest.MANIFEST),
    )  # fmt: skip
    return root


@dataclass(frozen=True)
class Built:
    archive: Path
    root: Path  # unpacked from the archive, as an operator would
    fingerprint: str
    seconds: float


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`scripts/build-bundle` as `make bundle` runs it, then the archive unpacked somewhere else."""
    import time

    for tool in ("mmdebstrap", "gpg", "gpgv", "dpkg-scanpackages"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/bootstrap (scripts/apt-packages.txt lists it)")
    out = tmp_path_factory.mktemp("bundle-build")
    start = time.monotonic()
    done = subprocess.run(
        [str(REPO / "scripts" / "build-bundle"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=2400,
        env={**os.environ, "PYTHON": sys.executable},
    )
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"build-bundle failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    print(done.stderr)
    archive = Path(done.stdout.splitlines()[0])
    fingerprint = re.search(r"fingerprint: ([0-9A-F]{40})", done.stdout)
    assert fingerprint, done.stdout
    unpacked = tmp_path_factory.mktemp("bundle-unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    return Built(archive, unpacked / archive.name.removesuffix(".tar"), fingerprint[1], seconds)
