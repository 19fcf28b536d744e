"""Reading plugin archives safely, listing installed trees, and building archives.

A plugin archive is a plain zip: `plugin.toml` and the code at its root, `plugin.sig` next to them when signed. Every
check runs on the central directory before a byte is written, and extraction re-checks the real sizes while it writes,
because a zip's declared sizes are the attacker's to choose.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import PluginError
from .manifest import MANIFEST_FILE, SIGNATURE_FILE, PluginManifest, parse_manifest
from .signing import Listing, sign_listing

_CHUNK = 64 * 1024
# Ratios only matter for members big enough to hurt; tiny files often compress 100:1 legitimately.
_RATIO_FLOOR = 1024 * 1024
_ALLOWED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Limits:
    max_unpacked_bytes: int
    max_files: int
    max_ratio: int


@dataclass(frozen=True)
class Extracted:
    listing: dict[str, tuple[str, int]]  # every file except plugin.sig
    signature: bytes | None
    manifest: PluginManifest


def _check_name(name: str, where: str) -> str:
    """The member's path, or a refusal for anything that could land outside the target directory."""
    if not name or "\x00" in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise PluginError(f"{where}: member {name!r} has an unsafe name")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise PluginError(f"{where}: member {name!r} is an absolute path")
    parts = [p for p in name.rstrip("/").split("/")]
    if any(p in ("", ".", "..") for p in parts):
        raise PluginError(f"{where}: member {name!r} points outside the plugin directory (path traversal)")
    if "__pycache__" in parts or name.endswith((".pyc", ".pyo")):
        # Byte code is not covered by review and would shadow the reviewed sources.
        raise PluginError(f"{where}: member {name!r} is compiled byte code; ship sources only")
    return "/".join(parts)


def _member_type(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0o170000 if info.create_system == 3 else 0


def _inspect(zf: zipfile.ZipFile, limits: Limits, where: str) -> list[tuple[zipfile.ZipInfo, str]]:
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise PluginError(f"{where}: {len(infos)} members, more than max_files ({limits.max_files})")
    seen: set[str] = set()
    dirs: set[str] = set()
    files: list[tuple[zipfile.ZipInfo, str]] = []
    total = 0
    for info in infos:
        name = _check_name(info.filename, where)
        kind = _member_type(info)
        if kind == stat.S_IFLNK:
            raise PluginError(f"{where}: member {info.filename!r} is a symbolic link; links are not allowed")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PluginError(f"{where}: member {info.filename!r} is not a regular file")
        if info.flag_bits & 0x1:
            raise PluginError(f"{where}: member {info.filename!r} is encrypted")
        if info.compress_type not in _ALLOWED_COMPRESSION:
            raise PluginError(f"{where}: member {info.filename!r} uses an unsupported compression method")
        folded = name.casefold()
        if folded in seen:
            raise PluginError(f"{where}: member {name!r} appears twice")
        seen.add(folded)
        parents = PurePosixPath(folded).parents
        dirs.update(str(p) for p in parents if str(p) != ".")
        if info.is_dir() or kind == stat.S_IFDIR:
            dirs.add(folded)
            continue
        total += info.file_size
        if total > limits.max_unpacked_bytes:
            raise PluginError(
                f"{where}: would unpack to more than max_unpacked_bytes ({limits.max_unpacked_bytes} bytes); "
                "refusing a possible zip bomb"
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise PluginError(
                f"{where}: member {name!r} expands {info.file_size // max(info.compress_size, 1)}:1, more than "
                f"max_ratio ({limits.max_ratio}:1); refusing a possible zip bomb"
            )
        files.append((info, name))
    clash = {n.casefold() for _, n in files} & dirs
    if clash:
        raise PluginError(f"{where}: {sorted(clash)[0]!r} is both a file and a directory")
    names = {n for _, n in files}
    if MANIFEST_FILE not in names:
        nested = sorted(n for n in names if n.endswith("/" + MANIFEST_FILE))
        hint = f" (found {nested[0]}: zip the folder's contents, not the folder)" if nested else ""
        raise PluginError(f"{where}: no {MANIFEST_FILE} at the archive's root{hint}")
    return files


def extract(archive: Path, dest: Path, limits: Limits, where: str) -> Extracted:
    """Unpack into the empty directory `dest`, counting real bytes; returns the listing, signature and manifest."""
    listing: dict[str, tuple[str, int]] = {}
    signature: bytes | None = None
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _inspect(zf, limits, where)
            written = 0
            for info, name in files:
                target = dest.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                size = 0
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        # zipfile stops at the declared size, but the declared size itself is only trusted this far.
                        if size > info.file_size or written > limits.max_unpacked_bytes:
                            raise PluginError(f"{where}: member {name!r} is larger than declared; refusing a zip bomb")
                        digest.update(chunk)
                        out.write(chunk)
                if name == SIGNATURE_FILE:
                    # Kept in the installed tree so that every load can verify it again against the current keys.
                    signature = target.read_bytes()
                    continue
                listing[name] = (digest.hexdigest(), size)
    except zipfile.BadZipFile as exc:
        raise PluginError(f"{where}: not a valid zip archive ({exc})") from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise PluginError(f"{where}: cannot be unpacked ({type(exc).__name__}: {exc})") from None
    manifest = parse_manifest((dest / MANIFEST_FILE).read_bytes(), where)
    return Extracted(listing, signature, manifest)


def list_tree(root: Path) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """The listing of an installed plugin directory, plus anything in it that an archive could not have produced."""
    listing: dict[str, tuple[str, int]] = {}
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                odd.append(os.path.relpath(os.path.join(dirpath, d), root))
                dirnames.remove(d)
        for f in filenames:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == SIGNATURE_FILE:
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                odd.append(rel)
                continue
            digest = hashlib.sha256()
            size = 0
            with open(full, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    size += len(chunk)
                    digest.update(chunk)
            listing[rel] = (digest.hexdigest(), size)
    return listing, odd


def source_files(src: Path) -> dict[str, Path]:
    """The files of a plugin source directory that go into its archive (byte code and dot files left out)."""
    if not (src / MANIFEST_FILE).is_file():
        raise PluginError(f"{src}: no {MANIFEST_FILE} here")
    found: dict[str, Path] = {}
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(p.startswith(".") or p == "__pycache__" for p in rel.parts) or path.suffix in (".pyc", ".pyo"):
            continue
        if path.is_symlink():
            raise PluginError(f"{path}: symbolic links cannot go into a plugin archive")
        if path.is_file() and rel.as_posix() != SIGNATURE_FILE:
            found[rel.as_posix()] = path
    return found


def build(src: Path, out: Path, private_key: Ed25519PrivateKey | None) -> tuple[PluginManifest, Listing]:
    """Zip `src` reproducibly (sorted names, fixed times and modes) and sign it when a key is given."""
    files = source_files(src)
    manifest = parse_manifest(files[MANIFEST_FILE].read_bytes(), str(src))
    listing: dict[str, tuple[str, int]] = {}
    for rel, path in files.items():
        data = path.read_bytes()
        listing[rel] = (hashlib.sha256(data).hexdigest(), len(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, path in files.items():
            info = zipfile.ZipInfo(rel, date_time=_FIXED_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
        if private_key is not None:
            info = zipfile.ZipInfo(SIGNATURE_FILE, date_time=_FIXED_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, sign_listing(listing, private_key))
    os.replace(tmp, out)
    return manifest, listing
