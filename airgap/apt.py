"""The bundle's local APT repository: the Debian packages the roles install, with their dependency closure for
bookworm, as a flat repository signed with the bundle key.

The package list is read from the roles' own `ansible.builtin.apt` tasks, so a role that starts installing a new
package cannot be forgotten here (tests/bundle checks every apt task is covered).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from airgap.manifest import BundleError
from airgap.wheels import REPO, cache_lock, cache_root

SUITE = "bookworm"
# apt names the roles write as Jinja: what each one can expand to.
TEMPLATED = {
    # roles/base: the variable's default list (an operator who adds packages rebuilds the bundle with --deb).
    "{{ base_packages }}": "base_packages",
    # roles/volumes: either filesystem's tools, whichever volumes_fs_type picks.
    "{{ ['e2fsprogs'] if volumes_fs_type == 'ext4' else ['xfsprogs'] }}": ["e2fsprogs", "xfsprogs"],
    # roles/model_server (tgi): NVIDIA's driver and container toolkit come from NVIDIA's repositories, and the headers
    # are the GPU host's running kernel's, unknown when the bundle is built: offline, point model_server_nvidia_repos
    # at a mirror of NVIDIA's repositories instead.
    "{{ model_server_nvidia_driver_packages + ['linux-headers-' ~ ansible_facts['kernel']] }}": [],
    "{{ model_server_nvidia_toolkit_packages }}": [],
}
# Not Debian packages: they come from their vendor's repository, which the bundle cannot reach at build time either.
NOT_DEBIAN = {"grafana": "Grafana's own APT repository (add its .deb with build-bundle --deb FILE)"}
# mmdebstrap's options: with Recommends, as the roles' apt tasks install them (most do not turn them off).
OPTIONS = ("--variant=apt", '--aptopt=APT::Install-Recommends "true"')


def _names(value: Any, where: str, defaults: dict[str, Any]) -> list[str]:
    if isinstance(value, list):
        return [n for v in value for n in _names(v, where, defaults)]
    if not isinstance(value, str):
        raise BundleError(f"{where}: apt name {value!r} is neither a string nor a list")
    if "{{" in value:
        if value.split("=")[0].strip() in NOT_DEBIAN:
            return []
        known = TEMPLATED.get(value.strip())
        if known is None:
            name = value.split("=", 1)[0]
            if "{{" not in name:
                return [] if name in NOT_DEBIAN else [name]
            raise BundleError(f"{where}: templated apt name {value!r}; say what it expands to in airgap.apt.TEMPLATED")
        return list(defaults[known]) if isinstance(known, str) else list(known)
    return [] if value in NOT_DEBIAN else [value]


def flat_tasks(tasks: Any) -> list[dict[str, Any]]:
    """Every task of a tasks file (a parsed YAML list, or None for an empty file), those inside blocks (and their
    rescue and always) included. The static tests walk role task files with this too."""
    out: list[dict[str, Any]] = []
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        out.append(task)
        for key in ("block", "rescue", "always"):
            out += flat_tasks(task.get(key))
    return out


def role_packages(repo: Path = REPO) -> dict[str, list[str]]:
    """Role -> the Debian packages its apt tasks install (the closure is apt's business)."""
    found: dict[str, list[str]] = {}
    for tasks in sorted(repo.glob("roles/*/tasks/*.yml")):
        role = tasks.parts[-3]
        defaults_file = tasks.parents[1] / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
        for task in flat_tasks(yaml.safe_load(tasks.read_text())):
            args = task.get("ansible.builtin.apt")
            if isinstance(args, dict) and "name" in args:
                where = f"{tasks.relative_to(repo)}: task {task.get('name')!r}"
                for name in _names(args["name"], where, defaults or {}):
                    found.setdefault(role, [])
                    if name not in found[role]:
                        found[role].append(name)
    return found


def all_packages(repo: Path = REPO) -> list[str]:
    return sorted({p for names in role_packages(repo).values() for p in names})


def debian_sources() -> list[str]:
    """One-line sources for bookworm, bookworm-updates and bookworm-security from this machine's apt configuration,
    so no mirror's host name is ever written into the repository."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    uris: list[str] = []
    if deb822.exists():
        uris = [line.split()[1] for line in deb822.read_text().splitlines() if line.startswith("URIs:")]
    elif Path("/etc/apt/sources.list").exists():
        uris = [
            line.split()[1]
            for line in Path("/etc/apt/sources.list").read_text().splitlines()
            if line.startswith("deb ")
        ]
    mirror = next((u for u in uris if "security" not in u), None)
    if mirror is None:
        raise BundleError("/etc/apt: no Debian mirror in this machine's apt sources")
    security = next((u for u in uris if "security" in u), mirror.rstrip("/") + "-security")
    return [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main", f"deb {security} {SUITE}-security main"]


def closure(packages: list[str], *, log: Path) -> Path:
    """Every .deb a bookworm system needs to install `packages` from nothing but this set (essential + apt + them),
    downloaded by mmdebstrap into a cache keyed on the package list and the sources (about 2 min the first time)."""
    if shutil.which("mmdebstrap") is None:
        raise BundleError("mmdebstrap is not installed (scripts/bootstrap installs it)")
    sources = debian_sources()
    key = hashlib.sha256("\n".join([*sorted(packages), *sources, *OPTIONS]).encode()).hexdigest()[:16]
    debs = cache_root() / "bundle-debs" / key
    with cache_lock(debs):
        if not (debs / ".complete").exists():
            _download_closure(packages, sources, debs, log)
    return debs


def _download_closure(packages: list[str], sources: list[str], debs: Path, log: Path) -> None:
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    with log.open("ab") as fh:
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                *OPTIONS,
                "--skip=essential/unlink",
                f"--include={','.join(packages)}",
                '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
                f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
                SUITE,
                "/dev/null",
                *sources,
            ],
            check=True,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    for leftover in ("lock", "partial"):
        target = debs / leftover
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    (debs / ".complete").touch()


def gpg(home: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--quiet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BundleError(f"gpg {' '.join(args[:2])} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def new_key(home: Path) -> str:
    """A signing key made for this build only (no passphrase: it lives in the build's temporary GnuPG home)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        "AI Assistant bundle <bundle@ai-assistant.invalid>",
        "ed25519",
        "sign",
        "2y",
    )
    return signing_key(home, None)


def signing_key(home: Path, wanted: str | None) -> str:
    """The fingerprint of the secret key to sign with: `wanted` if given (it must be there), else the only one."""
    listing = gpg(home, "--with-colons", "--list-secret-keys")
    fprs, in_sec = [], False
    for line in listing.splitlines():
        kind = line.split(":")[0]
        if kind == "sec":
            in_sec = True
        elif kind == "fpr" and in_sec:
            fprs.append(line.split(":")[9])
            in_sec = False
        elif kind == "ssb":
            in_sec = False
    if wanted:
        wanted = wanted.replace(" ", "").upper()
        if wanted not in fprs:
            raise BundleError(f"{home}: no secret key with fingerprint {wanted} (--key)")
        return wanted
    if len(fprs) != 1:
        raise BundleError(f"{home}: {len(fprs)} secret keys; name the one to sign with (--key FINGERPRINT)")
    return fprs[0]


def _release(repo: Path, version: str) -> str:
    lines = [
        "Origin: ai-assistant-bundle",
        "Label: ai-assistant-bundle",
        f"Suite: {SUITE}",
        f"Codename: {SUITE}",
        f"Version: {version}",
        "Architectures: amd64 all",
        f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S UTC')}",
        "Description: the Debian packages of one AI Assistant bundle (make bundle)",
    ]
    for field, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (repo / name).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def make_repo(debs: list[Path], repo: Path, *, home: Path, key: str, version: str) -> None:
    """A flat repository (`deb [signed-by=KEYRING] file:/DIR ./`): the .debs, Packages, a signed Release."""
    repo.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, repo / deb.name)
    scan = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    if scan.returncode != 0:
        raise BundleError(f"dpkg-scanpackages failed in {repo}: {scan.stderr.strip()[-300:]}")
    (repo / "Packages").write_text(scan.stdout)
    (repo / "Packages.gz").write_bytes(gzip.compress(scan.stdout.encode(), mtime=0))
    (repo / "Release").write_text(_release(repo, version))
    gpg(home, "--yes", "--local-user", key, "--clearsign", "--output", str(repo / "InRelease"), str(repo / "Release"))
    gpg(
        home,
        "--yes",
        "--local-user",
        key,
        "--armor",
        "--detach-sign",
        "--output",
        str(repo / "Release.gpg"),
        str(repo / "Release"),
    )
    gpg(home, "--yes", "--output", str(repo / "bundle-archive-keyring.gpg"), "--export", key)
