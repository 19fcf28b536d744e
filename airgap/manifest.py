"""The bundle's manifest: the version it was built for and the sha256 and size of every file in it.

`verify` is what an operator (scripts/verify-bundle) and the base role's preflight run before anything is installed
from a bundle: a bundle from another version, a changed file, a missing file or an unexpected one is refused with one
line naming it, so a host is never half-installed from a damaged bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.asc"
SUMS = "SHA256SUMS"
# Written after the manifest, so it cannot list them.
UNLISTED = frozenset({MANIFEST, SIGNATURE})
# The bundle key (also in apt.tar): it signs the manifest and the APT repository's InRelease.
KEYRING = "bundle-archive-keyring.gpg"


class BundleError(ValueError):
    """A bundle that must not be used; the message is one line naming the file or field."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in UNLISTED
    )


def write(root: Path, *, version: str, revision: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file under `root` into manifest.json and SHA256SUMS (the latter for `sha256sum -c`)."""
    (root / SUMS).unlink(missing_ok=True)
    files = {name: {"sha256": sha256(root / name), "size": (root / name).stat().st_size} for name in _files(root)}
    (root / SUMS).write_text("".join(f"{meta['sha256']}  {name}\n" for name, meta in files.items()))
    files[SUMS] = {"sha256": sha256(root / SUMS), "size": (root / SUMS).stat().st_size}
    manifest = {"format": FORMAT, "version": version, "revision": revision, **(extra or {}), "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing; is {root} an unpacked bundle (make bundle)?")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: field 'format' must be {FORMAT} (a bundle from an incompatible build)")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("version"), str):
        raise BundleError(f"{path}: fields 'version' and 'files' are required")
    return manifest


@dataclass(frozen=True)
class Verified:
    version: str
    revision: str
    files: int
    fingerprint: str


def key_fingerprint(keyring: Path) -> str:
    """The primary key's fingerprint of a keyring file (gpg --show-keys reads it without importing anything)."""
    if shutil.which("gpg") is None:
        raise BundleError("gpg is not installed; it checks the bundle's signature (apt-get install gpg)")
    out = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--show-keys", str(keyring)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    fprs = [line.split(":")[9] for line in out.stdout.splitlines() if line.startswith("fpr:")]
    if out.returncode != 0 or not fprs:
        raise BundleError(f"{keyring}: not an OpenPGP keyring ({out.stderr.strip()[:200]})")
    return fprs[0]


def check_signature(root: Path, fingerprint: str) -> str:
    """The manifest is signed by the bundle key, and that key has the fingerprint the operator checked."""
    keyring, signature = root / KEYRING, root / SIGNATURE
    for path in (keyring, signature):
        if not path.is_file():
            raise BundleError(f"{path}: missing; the bundle is unsigned or incomplete")
    actual = key_fingerprint(keyring)
    wanted = fingerprint.replace(" ", "").upper()
    if actual.upper() != wanted:
        raise BundleError(f"{keyring}: key fingerprint {actual} is not the expected {wanted}")
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            ["gpgv", "--homedir", home, "--keyring", str(keyring), str(signature), str(root / MANIFEST)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["gpgv failed"])[-1]
        raise BundleError(f"{signature}: bad signature over {MANIFEST} ({said})")
    return actual


def verify(root: Path, *, version: str | None = None, fingerprint: str | None = None) -> Verified:
    """Every listed file present with its size and sha256, nothing unlisted, the version as expected."""
    manifest = read(root)
    if version is not None and manifest["version"] != version:
        raise BundleError(
            f"{root / MANIFEST}: bundle is for version {manifest['version']}, this checkout is {version} "
            "(build the bundle from the same release: make bundle)"
        )
    signed = check_signature(root, fingerprint) if fingerprint else ""
    listed: dict[str, Any] = manifest["files"]
    for name, meta in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle (listed in {MANIFEST})")
        if path.stat().st_size != meta.get("size"):
            raise BundleError(f"{path}: size {path.stat().st_size}, manifest says {meta.get('size')} (damaged copy?)")
        if sha256(path) != meta.get("sha256"):
            raise BundleError(f"{path}: sha256 mismatch with {MANIFEST} (damaged or altered)")
    extra = sorted(set(_files(root)) - set(listed))
    if extra:
        raise BundleError(f"{root / extra[0]}: not listed in {MANIFEST} ({len(extra)} unlisted file(s))")
    return Verified(manifest["version"], str(manifest.get("revision", "")), len(listed), signed)
