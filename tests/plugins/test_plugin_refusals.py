"""Every way an archive can be bad is refused with one clear line, and nothing under data/plugins changes: the version
installed before keeps loading. The bad archives are made here byte by byte with zipfile, as an attacker would."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ai_assistant.plugins import PluginError, load_archive_plugins, load_plugin_settings
from ai_assistant.plugins.manager import PluginManager
from ai_assistant.registry import Kind, Registry

from .conftest import Env


def rewrite(src: Path, dest: Path, change: Callable[[zipfile.ZipFile, zipfile.ZipFile], None]) -> Path:
    """Copy a zip member by member, then let `change` add to (or instead of) it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        change(zin, zout)
    return dest


def copy_all(zin: zipfile.ZipFile, zout: zipfile.ZipFile, skip: tuple[str, ...] = ()) -> None:
    for info in zin.infolist():
        if info.filename not in skip:
            zout.writestr(info, zin.read(info))


def add_member(name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> Callable[..., None]:
    def change(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
        copy_all(zin, zout)
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = mode << 16
        zout.writestr(info, data, zipfile.ZIP_DEFLATED)

    return change


def tampered(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
    for info in zin.infolist():
        data = zin.read(info)
        if info.filename == "im_connector/__init__.py":
            data = data.replace(b"WINDOW_SECONDS = 300", b"WINDOW_SECONDS = 10**9")
        zout.writestr(info, data)


def lying_size_bomb(path: Path) -> None:
    """Declare 1 KiB in both headers for a member that really inflates to 2 MiB."""
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("im_connector/blob.bin", b"\0" * (2 * 1024 * 1024))
    raw = bytearray(path.read_bytes())
    real = (2 * 1024 * 1024).to_bytes(4, "little")
    fake = (1024).to_bytes(4, "little")
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = raw.find(sig + b"")
        while start != -1:
            if raw[start + offset : start + offset + 4] == real:
                raw[start + offset : start + offset + 4] = fake
            start = raw.find(sig, start + 4)
    path.write_bytes(bytes(raw))


@pytest.fixture
def installed(env: Env) -> Env:
    """im-connector 1.0.0 installed and enabled: every refusal below must leave it exactly so."""
    env.manager().install(env.archive(env.source("1.0.0")).as_uri(), "connector", "im-connector")
    return env


def assert_unchanged_and_working(env: Env, before: dict[str, str]) -> None:
    assert env.snapshot() == before
    registry = Registry()
    assert load_archive_plugins(registry, env.data_dir, load_plugin_settings(env.config_dir)) == ["im-connector"]
    assert registry.entries[(Kind.CONNECTOR, "im-connector")].source == "plugin:im-connector"
    assert [c.record.version for c in env.manager().check_all()] == ["1.0.0"]


def bad_archive(env: Env, case: str) -> tuple[str, str]:
    """(url, expected message) for one kind of bad upgrade archive."""
    good = env.archive(env.source("2.0.0"))
    out = env.work / f"{case}.zip"
    if case == "tampered":
        rewrite(good, out, tampered)
        return out.as_uri(), "altered after it was signed"
    if case == "unsigned":
        return env.archive(env.source("2.0.0"), signed=False).as_uri(), "not signed"
    if case == "unknown-key":
        return env.archive(env.source("2.0.0"), key=Ed25519PrivateKey.generate()).as_uri(), "not in trusted_keys"
    if case == "traversal":
        rewrite(good, out, add_member("../../evil.py", b"print('owned')"))
        return out.as_uri(), "path traversal"
    if case == "traversal-inside":
        rewrite(good, out, add_member("im_connector/../../evil.py", b"x"))
        return out.as_uri(), "path traversal"
    if case == "absolute":
        rewrite(good, out, add_member("/etc/cron.d/evil", b"x"))
        return out.as_uri(), "absolute path"
    if case == "backslash":
        rewrite(good, out, add_member("..\\evil.py", b"x"))
        return out.as_uri(), "unsafe name"
    if case == "symlink":
        rewrite(good, out, add_member("im_connector/link", b"/etc/passwd", stat.S_IFLNK | 0o777))
        return out.as_uri(), "symbolic link"
    if case == "ratio-bomb":
        rewrite(good, out, add_member("im_connector/zeros.bin", b"\0" * (8 * 1024 * 1024)))
        return out.as_uri(), "zip bomb"
    if case == "lying-size-bomb":
        out.write_bytes(good.read_bytes())
        lying_size_bomb(out)
        return out.as_uri(), "Bad CRC-32"
    if case == "too-big-unpacked":
        env.write_settings(max_unpacked_bytes=64 * 1024)
        rewrite(good, out, add_member("im_connector/data.bin", os.urandom(100 * 1024)))
        return out.as_uri(), "max_unpacked_bytes"
    if case == "too-many-files":
        env.write_settings(max_files=5)
        rewrite(
            good, out, lambda zin, zout: [copy_all(zin, zout), *(zout.writestr(f"f{i}.txt", "x") for i in range(5))]
        )
        return out.as_uri(), "more than max_files"
    if case == "too-big-download":
        env.write_settings(max_archive_bytes=2048)
        return good.as_uri(), "larger than max_archive_bytes"
    if case == "duplicate":
        rewrite(good, out, add_member("PLUGIN.toml", b"x"))
        return out.as_uri(), "appears twice"
    if case == "bytecode":
        rewrite(good, out, add_member("im_connector/__pycache__/x.cpython-311.pyc", b"x"))
        return out.as_uri(), "byte code"
    if case == "no-manifest":
        rewrite(good, out, lambda zin, zout: copy_all(zin, zout, skip=("plugin.toml",)))
        return out.as_uri(), "no plugin.toml at the archive's root"
    if case == "nested-folder":

        def nest(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
            for info in zin.infolist():
                zout.writestr("im-connector/" + info.filename, zin.read(info))

        rewrite(good, out, nest)
        return out.as_uri(), "found im-connector/plugin.toml"
    if case == "wrong-type":
        return env.archive(
            env.source("2.0.0", type="channel")
        ).as_uri(), "type 'channel', not the requested 'connector'"
    if case == "wrong-name":
        return env.archive(env.source("2.0.0", name="other-plugin")).as_uri(), "name 'other-plugin'"
    if case == "bad-manifest":

        def bad_version(zin: zipfile.ZipFile, zout: zipfile.ZipFile) -> None:
            copy_all(zin, zout, skip=("plugin.toml",))
            zout.writestr("plugin.toml", zin.read("plugin.toml").replace(b'version = "2.0.0"', b'version = "two"'))

        rewrite(good, out, bad_version)
        return out.as_uri(), "plugin.toml: version: 'two' is not a PEP 440 version"
    if case == "incompatible":
        return env.archive(env.source("2.0.0", requires_assistant=">=99")).as_uri(), "requires assistant >=99"
    if case == "no-entry-module":
        return env.archive(env.source("2.0.0", entry_point="missing_mod:X")).as_uri(), "'missing_mod' is not in"
    if case == "not-a-zip":
        out.write_bytes(b"this is not a zip file at all")
        return out.as_uri(), "not a valid zip archive"
    if case == "not-newer":
        return env.archive(env.source("1.0.0")).as_uri(), "not newer than the installed 1.0.0"
    if case == "http":
        return "http://127.0.0.1:9/im.zip", "plain http is refused"
    if case == "ftp":
        return "ftp://127.0.0.1/im.zip", "unsupported URL scheme"
    if case == "missing-file":
        return (env.work / "nope.zip").as_uri(), "file not found"
    raise AssertionError(case)


CASES = [
    "tampered",
    "unsigned",
    "unknown-key",
    "traversal",
    "traversal-inside",
    "absolute",
    "backslash",
    "symlink",
    "ratio-bomb",
    "lying-size-bomb",
    "too-big-unpacked",
    "too-many-files",
    "too-big-download",
    "duplicate",
    "bytecode",
    "no-manifest",
    "nested-folder",
    "wrong-type",
    "wrong-name",
    "bad-manifest",
    "incompatible",
    "no-entry-module",
    "not-a-zip",
    "not-newer",
    "http",
    "ftp",
    "missing-file",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_upgrade_is_refused_and_changes_nothing(installed: Env, case: str) -> None:
    url, expected = bad_archive(installed, case)
    before = installed.snapshot()
    with pytest.raises(PluginError) as err:
        installed.manager().upgrade("im-connector", url=url)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    # The limits were only lowered to make the archive bad; restore them so the old version is judged as before.
    installed.write_settings()
    assert_unchanged_and_working(installed, before)


@pytest.mark.parametrize("case", ["tampered", "unsigned", "unknown-key", "traversal", "symlink", "ratio-bomb"])
def test_bad_fresh_install_leaves_no_trace(env: Env, case: str) -> None:
    url, expected = bad_archive(env, case)
    with pytest.raises(PluginError, match=re.escape(expected)):
        env.manager().install(url, "connector", "im-connector")
    assert env.snapshot() == {}
    assert not (env.work.parent / "evil.py").exists()


def test_wrong_sha256_pin(installed: Env) -> None:
    url = installed.archive(installed.source("2.0.0")).as_uri()
    before = installed.snapshot()
    with pytest.raises(PluginError, match="not the pinned 0000"):
        installed.manager().upgrade("im-connector", url=url, sha256="0" * 64)
    with pytest.raises(PluginError, match="is not 64 hex digits"):
        installed.manager().upgrade("im-connector", url=url, sha256="abc")
    assert_unchanged_and_working(installed, before)


def test_install_twice_and_unknown_names(installed: Env) -> None:
    before = installed.snapshot()
    url = installed.archive(installed.source("2.0.0")).as_uri()
    with pytest.raises(PluginError, match=r"already installed \(version 1.0.0\); use upgrade"):
        installed.manager().install(url, "connector", "im-connector")
    for call in (
        lambda m: m.upgrade("nope", url=url),
        lambda m: m.set_enabled("nope", True),
        lambda m: m.remove("nope"),
    ):
        with pytest.raises(PluginError, match=r"'nope' is not installed \(installed: im-connector\)"):
            call(installed.manager())
    with pytest.raises(PluginError, match="--name 'Bad Name!'"):
        installed.manager().install(url, "connector", "Bad Name!")
    with pytest.raises(PluginError, match="--type 'gadget'"):
        installed.manager().install(url, "gadget", "x-plugin")
    assert_unchanged_and_working(installed, before)


def test_failed_commit_keeps_the_previous_version(installed: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """If writing the new state fails (disk full), the new files are removed and 1.0.0 stays installed and loading."""
    before = installed.snapshot()
    manager = installed.manager()

    def disk_full(state: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manager, "_write_state", disk_full)
    with pytest.raises(OSError, match="No space left"):
        manager.upgrade("im-connector", url=installed.archive(installed.source("2.0.0")).as_uri())
    assert_unchanged_and_working(installed, before)


def test_process_killed_mid_upgrade_keeps_the_previous_version(installed: Env) -> None:
    """A real crash at the worst moment: SIGKILL right after the new version's directory is in place, before the state
    file names it. The old version stays in force; the next operation clears the orphan."""
    url = installed.archive(installed.source("2.0.0")).as_uri()
    before = installed.snapshot()
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from ai_assistant.plugins import PluginManager, load_plugin_settings
        real_rename = os.rename
        def rename_then_die(src, dst):
            real_rename(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        os.rename = rename_then_die
        settings = load_plugin_settings(Path({str(installed.config_dir)!r}))
        manager = PluginManager(Path({str(installed.data_dir)!r}), settings)
        manager.upgrade("im-connector", url={url!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -9, proc.stderr.decode()
    orphans = [p.name for p in (installed.data_dir / "plugins" / "installed").iterdir() if "2.0.0" in p.name]
    assert orphans, "the kill should have happened after the new directory was moved in"
    # Readers see the previous version only ...
    registry = Registry()
    assert load_archive_plugins(registry, installed.data_dir, load_plugin_settings(installed.config_dir)) == [
        "im-connector"
    ]
    assert [c.record.version for c in installed.manager().check_all()] == ["1.0.0"]
    # ... and the next operation removes what the killed one left behind.
    installed.manager().set_enabled("im-connector", True)
    assert_unchanged_and_working(installed, before)


def test_concurrent_operation_is_refused(installed: Env) -> None:
    import fcntl

    with open(installed.data_dir / "plugins" / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(PluginError, match="another plugin operation is running"):
            installed.manager().set_enabled("im-connector", False)
    assert installed.manager().check_all()[0].status == "enabled"


def test_damaged_state_file_is_reported_not_overwritten(installed: Env) -> None:
    state = installed.data_dir / "plugins" / "state.json"
    state.write_text('{"version": 1, "plugins": {"x": {"name": 5}}}')
    with pytest.raises(PluginError, match=r"state.json: plugins.x.* \(the plugin state file is damaged\)"):
        PluginManager(installed.data_dir, load_plugin_settings(installed.config_dir)).check_all()
    registry = Registry()
    assert load_archive_plugins(registry, installed.data_dir, load_plugin_settings(installed.config_dir)) == []
    assert any("damaged" in p for p in registry.problems)
    assert state.read_text() == '{"version": 1, "plugins": {"x": {"name": 5}}}'


def test_io_bytes_helper_is_a_real_zip() -> None:
    """Guard for the crafting helpers above: what they write is readable by zipfile itself."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "x")
    assert zipfile.ZipFile(buf).namelist() == ["a.txt"]
