"""Install, upgrade, enable, disable and remove archive plugins under `<data_dir>/plugins/`.

Layout:
    state.json                    what is installed, from where, signed by whom, the digest of its files, enabled or not
    installed/<name>-<ver>-<h12>/ one directory per installed version (read only)
    .staging/<random>/            work area of an operation in progress; anything left here is from an interrupted run
    .lock                         one operation at a time

An operation does all of its work in `.staging/`, then renames the finished directory into `installed/` and commits by
atomically replacing state.json. Until that replace, the previous state (and version) is what every reader sees; after
it, the old version's directory is removed. A crash in between leaves at most an unreferenced directory, which the next
operation removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from .archive import Limits, extract, list_tree
from .errors import PluginError
from .fetch import fetch, has_secrets, redact
from .manifest import (
    MANIFEST_FILE,
    NAME_PATTERN,
    PLUGIN_TYPES,
    SIGNATURE_FILE,
    PluginManifest,
    PluginType,
    parse_manifest,
)
from .settings import PluginSettings
from .signing import Signer, tree_digest, verify_listing

STATE_VERSION = 1


class PluginRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: PluginType
    version: str
    entry_point: str
    permissions: list[str] = Field(default_factory=list)
    source: str  # redacted: no credentials, query or fragment
    source_complete: bool = True  # False when redaction removed something, so `upgrade` needs --url again
    archive_sha256: str
    tree_sha256: str
    signer: str  # "unsigned" or a trusted key's name
    signer_key_id: str | None = None
    directory: str  # under installed/
    installed_at: float
    enabled: bool = True


class PluginState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    plugins: dict[str, PluginRecord] = Field(default_factory=dict)


Status = Literal["enabled", "disabled", "altered", "untrusted", "incompatible", "missing", "unreadable"]


@dataclass(frozen=True)
class Checked:
    record: PluginRecord
    status: Status
    detail: str = ""
    manifest: PluginManifest | None = None  # read from the verified files (what /help lists comes from here)


class PluginManager:
    def __init__(self, data_dir: Path, settings: PluginSettings, assistant_version: str = __version__) -> None:
        self.root = data_dir / "plugins"
        self.installed = self.root / "installed"
        self.staging = self.root / ".staging"
        self.state_file = self.root / "state.json"
        self.settings = settings
        self.assistant_version = assistant_version

    # ----------------------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------------------
    def read_state(self) -> PluginState:
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return PluginState()
        try:
            state = PluginState.model_validate_json(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise PluginError(f"{self.state_file}: {key}: {err['msg']} (the plugin state file is damaged)") from None
        if state.version != STATE_VERSION:
            raise PluginError(f"{self.state_file}: version: {state.version} is not supported")
        return state

    def _write_state(self, state: PluginState) -> None:
        data = state.model_dump_json(indent=2).encode()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state-", suffix=".json")
        try:
            # Holds no secret (sources are redacted) and the service user must read what an operator installed.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextmanager
    def _locked(self) -> Iterator[PluginState]:
        self.root.mkdir(parents=True, exist_ok=True)
        self.installed.mkdir(exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PluginError(f"{self.root}: another plugin operation is running; try again") from None
            try:
                state = self.read_state()
                self._collect_garbage(state)
                yield state
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _collect_garbage(self, state: PluginState) -> None:
        """Remove what interrupted operations left: staging areas and directories no record points to."""
        if self.staging.exists():
            _rmtree(self.staging)
        referenced = {r.directory for r in state.plugins.values()}
        for child in self.installed.iterdir():
            if child.name not in referenced:
                _rmtree(child)

    def _get(self, state: PluginState, name: str) -> PluginRecord:
        record = state.plugins.get(name)
        if record is None:
            known = ", ".join(sorted(state.plugins)) or "none"
            raise PluginError(f"plugin {name!r} is not installed (installed: {known})")
        return record

    # ----------------------------------------------------------------------------------------------------------
    # Operations
    # ----------------------------------------------------------------------------------------------------------
    def install(
        self, url: str, plugin_type: str, name: str, *, sha256: str | None = None, enabled: bool = True
    ) -> PluginRecord:
        _check_request(plugin_type, name, sha256)
        with self._locked() as state:
            if name in state.plugins:
                current = state.plugins[name]
                raise PluginError(f"plugin {name!r} is already installed (version {current.version}); use upgrade")
            record = self._stage_and_commit(state, url, plugin_type, name, sha256, enabled, previous=None)
        return record

    def upgrade(self, name: str, *, url: str | None = None, sha256: str | None = None) -> PluginRecord:
        with self._locked() as state:
            previous = self._get(state, name)
            if url is None:
                if not previous.source_complete:
                    raise PluginError(
                        f"plugin {name!r} was installed from a URL with credentials or a query, which are not stored; "
                        "give --url again"
                    )
                url = previous.source
            _check_request(previous.type, name, sha256)
            return self._stage_and_commit(state, url, previous.type, name, sha256, previous.enabled, previous)

    def set_enabled(self, name: str, enabled: bool) -> PluginRecord:
        with self._locked() as state:
            record = self._get(state, name).model_copy(update={"enabled": enabled})
            state.plugins[name] = record
            self._write_state(state)
        return record

    def remove(self, name: str) -> PluginRecord:
        with self._locked() as state:
            record = self._get(state, name)
            del state.plugins[name]
            self._write_state(state)
            _rmtree(self.installed / record.directory)
        return record

    def check_all(self) -> list[Checked]:
        """Every installed plugin with its status, verified against the files on disk and the current trust settings."""
        return [self.check(r) for r in sorted(self.read_state().plugins.values(), key=lambda r: r.name)]

    def check(self, record: PluginRecord) -> Checked:
        try:
            return self._check(record)
        except (OSError, PluginError) as exc:  # e.g. a file made unreadable to the service user
            return Checked(record, "unreadable", f"{record.name}: {exc}")

    def _check(self, record: PluginRecord) -> Checked:
        directory = self.installed / record.directory
        if not directory.is_dir():
            return Checked(record, "missing", f"{directory} does not exist")
        listing, odd = list_tree(directory)
        if odd or tree_digest(listing) != record.tree_sha256:
            what = f"unexpected {odd[0]}" if odd else "files differ from what was installed"
            return Checked(record, "altered", f"{directory}: {what}")
        sig_path = directory / SIGNATURE_FILE
        signature = sig_path.read_bytes() if sig_path.is_file() else None
        try:
            signer = verify_listing(listing, signature, self.settings, record.name)
        except PluginError as exc:
            return Checked(record, "untrusted", str(exc))
        if record.signer_key_id and signer.key_id != record.signer_key_id:
            # Installed as signed, now only acceptable as unsigned: the key was removed from trusted_keys.
            return Checked(record, "untrusted", f"{record.name}: key {record.signer_key_id} is no longer trusted")
        manifest = parse_manifest((directory / MANIFEST_FILE).read_bytes(), record.name)
        if not manifest.supports(self.assistant_version):
            return Checked(
                record,
                "incompatible",
                f"{record.name}: requires assistant {manifest.requires_assistant}, running {self.assistant_version}",
            )
        return Checked(record, "enabled" if record.enabled else "disabled", manifest=manifest)

    # ----------------------------------------------------------------------------------------------------------
    def _stage_and_commit(
        self,
        state: PluginState,
        url: str,
        plugin_type: str,
        name: str,
        sha256: str | None,
        enabled: bool,
        previous: PluginRecord | None,
    ) -> PluginRecord:
        shown = redact(url)
        self.staging.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=self.staging))
        try:
            archive = work / "archive.zip"
            fetch(
                url,
                archive,
                max_bytes=self.settings.max_archive_bytes,
                ca_bundle=self.settings.ca_bundle,
                timeout=self.settings.download_timeout_seconds,
            )
            archive_sha = _sha256_file(archive)
            if sha256 is not None and archive_sha != sha256.lower():
                raise PluginError(f"{shown}: sha256 is {archive_sha}, not the pinned {sha256.lower()}")
            tree = work / "tree"
            tree.mkdir()
            limits = Limits(self.settings.max_unpacked_bytes, self.settings.max_files, self.settings.max_ratio)
            got = extract(archive, tree, limits, shown)
            manifest = got.manifest
            if manifest.type != plugin_type:
                raise PluginError(
                    f"{shown}: plugin.toml says type {manifest.type!r}, not the requested {plugin_type!r}"
                )
            if manifest.name != name:
                raise PluginError(f"{shown}: plugin.toml says name {manifest.name!r}, not the requested {name!r}")
            if not manifest.supports(self.assistant_version):
                raise PluginError(
                    f"{shown}: requires assistant {manifest.requires_assistant}; this is {self.assistant_version}"
                )
            _check_entry_module(manifest, got.listing, shown)
            signer: Signer = verify_listing(got.listing, got.signature, self.settings, shown)
            if previous is not None and manifest.parsed_version <= Version(previous.version):
                raise PluginError(
                    f"{shown}: version {manifest.version} is not newer than the installed {previous.version}"
                )
            tree_sha = tree_digest(got.listing)
            directory = f"{name}-{manifest.version}-{tree_sha[:12]}"
            _make_read_only(tree)
            os.rename(tree, self.installed / directory)
            # Only now: moving a directory needs write access to it (its `..` entry changes).
            os.chmod(self.installed / directory, 0o555)  # noqa: S103 - readable by the service user, writable by none
            record = PluginRecord(
                name=name,
                type=manifest.type,
                version=manifest.version,
                entry_point=manifest.entry_point,
                permissions=list(manifest.permissions),
                source=shown,
                source_complete=not has_secrets(url),
                archive_sha256=archive_sha,
                tree_sha256=tree_sha,
                signer=signer.name,
                signer_key_id=signer.key_id,
                directory=directory,
                installed_at=time.time(),
                enabled=enabled,
            )
            state.plugins[name] = record
            try:
                self._write_state(state)
            except BaseException:
                _rmtree(self.installed / directory)
                if previous is not None:
                    state.plugins[name] = previous
                else:
                    del state.plugins[name]
                raise
            if previous is not None:
                _rmtree(self.installed / previous.directory)
            return record
        finally:
            _rmtree(work)
            with contextlib.suppress(OSError):
                self.staging.rmdir()  # only when empty: another operation's area is never touched


def _check_request(plugin_type: str, name: str, sha256: str | None) -> None:
    if plugin_type not in PLUGIN_TYPES:
        raise PluginError(f"--type {plugin_type!r} is not one of {', '.join(PLUGIN_TYPES)}")
    if not re.match(NAME_PATTERN, name):
        raise PluginError(f"--name {name!r} must be 2-64 characters of a-z, 0-9, - and _, starting with a letter")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise PluginError(f"--sha256 {sha256!r} is not 64 hex digits")


def _check_entry_module(manifest: PluginManifest, listing: dict[str, tuple[str, int]], shown: str) -> None:
    base = manifest.module.replace(".", "/")
    if f"{base}.py" not in listing and f"{base}/__init__.py" not in listing:
        raise PluginError(f"{shown}: entry_point module {manifest.module!r} is not in the archive")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(64 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _make_read_only(tree: Path) -> None:
    # Installed by an operator (often root) and only read by the service user: read bits for all, write for none.
    for dirpath, _dirs, files in os.walk(tree):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o444)
        if Path(dirpath) != tree:
            os.chmod(dirpath, 0o555)  # noqa: S103 - see above


def _rmtree(path: Path) -> None:
    if not path.exists():
        return
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o700)  # read-only directories cannot have their entries removed
    shutil.rmtree(path)
