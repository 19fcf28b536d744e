"""Loading: archive plugins and entry-point packages go through the one Registry; a broken, altered or no longer
trusted plugin is reported and skipped while everything else loads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ai_assistant.plugins import load_archive_plugins, load_plugin_settings
from ai_assistant.registry import Kind, Registry

from .conftest import Env

GOOD_CHANNEL = """
class Plugin:
    name = "audit-log"

    def __init__(self) -> None:
        self.seen = []

    async def deliver(self, part) -> None:
        self.seen.append(part)
"""


def load(env: Env, registry: Registry | None = None) -> tuple[Registry, list[str]]:
    registry = registry or Registry()
    loaded = load_archive_plugins(registry, env.data_dir, load_plugin_settings(env.config_dir))
    return registry, loaded


def install(env: Env, name: str, files: dict[str, str], **kw: str) -> None:
    src = env.custom_source(name, files, **kw)
    env.manager().install(env.archive(src).as_uri(), kw.get("type", "channel"), name)


def status(env: Env, name: str) -> tuple[str, str]:
    [c] = [c for c in env.manager().check_all() if c.record.name == name]
    return c.status, c.detail


def test_plugin_that_raises_at_import_is_skipped_and_reported(env: Env) -> None:
    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    install(env, "broken", {"broken_plugin/__init__.py": "raise RuntimeError('boom at import')\n"})
    install(env, "no-attr", {"no_attr.py": "x = 1\n"})
    registry, loaded = load(env)
    assert loaded == ["audit-log"]
    assert registry.entries[(Kind.CHANNEL, "audit-log")].source == "plugin:audit-log"
    assert (Kind.CHANNEL, "broken") not in registry.entries
    assert any("broken failed to load: RuntimeError: boom at import" in p for p in registry.problems)
    assert any("no-attr failed to load: AttributeError" in p for p in registry.problems)
    assert "broken_plugin" not in sys.modules  # the half-imported module is not left behind
    # Importing must not have written byte code into the verified tree.
    assert status(env, "audit-log")[0] == "enabled"


def test_altered_file_after_install_stops_the_plugin(env: Env) -> None:
    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    record = env.manager().read_state().plugins["audit-log"]
    target = env.data_dir / "plugins" / "installed" / record.directory / "audit_log.py"
    os.chmod(target, 0o644)
    target.write_text(GOOD_CHANNEL + "\nimport os  # injected\n")
    assert status(env, "audit-log")[0] == "altered"
    registry, loaded = load(env)
    assert loaded == []
    assert any("audit-log (altered) skipped" in p for p in registry.problems)


def test_added_file_after_install_stops_the_plugin(env: Env) -> None:
    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    record = env.manager().read_state().plugins["audit-log"]
    directory = env.data_dir / "plugins" / "installed" / record.directory
    os.chmod(directory, 0o700)
    (directory / "__pycache__").mkdir()
    (directory / "__pycache__" / "audit_log.cpython-311.pyc").write_bytes(b"evil")
    st, detail = status(env, "audit-log")
    assert st == "altered"
    assert "files differ" in detail


def test_symlink_planted_after_install_is_detected(env: Env) -> None:
    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    record = env.manager().read_state().plugins["audit-log"]
    directory = env.data_dir / "plugins" / "installed" / record.directory
    os.chmod(directory, 0o700)
    (directory / "extra.py").symlink_to("/etc/hostname")
    st, detail = status(env, "audit-log")
    assert st == "altered"
    assert "unexpected extra.py" in detail


def test_revoked_key_stops_the_plugin_at_next_load(env: Env) -> None:
    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    (env.config_dir / "plugins.yaml").write_text("trusted_keys: []\n")
    st, detail = status(env, "audit-log")
    assert st == "untrusted"
    assert "not in trusted_keys" in detail
    registry, loaded = load(env)
    assert loaded == []
    assert any("audit-log (untrusted) skipped" in p for p in registry.problems)


def test_unsigned_only_when_explicitly_allowed(env: Env) -> None:
    src = env.custom_source("audit-log", {"audit_log.py": GOOD_CHANNEL})
    unsigned = env.archive(src, signed=False).as_uri()
    env.write_settings(require_signature=False)
    record = env.manager().install(unsigned, "channel", "audit-log")
    assert record.signer == "unsigned"
    assert record.signer_key_id is None
    assert load(env)[1] == ["audit-log"]
    # Turning signatures back on stops it at the next start, without touching its files.
    env.write_settings(require_signature=True)
    assert status(env, "audit-log")[0] == "untrusted"
    assert load(env)[1] == []


def test_unknown_key_is_unsigned_when_signatures_are_optional(env: Env) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    src = env.custom_source("audit-log", {"audit_log.py": GOOD_CHANNEL})
    env.write_settings(require_signature=False)
    url = env.archive(src, key=Ed25519PrivateKey.generate()).as_uri()
    assert env.manager().install(url, "channel", "audit-log").signer == "unsigned"


def test_plugin_cannot_shadow_an_installed_module(env: Env) -> None:
    install(env, "json-shadow", {"json/__init__.py": "class Plugin: pass\n"})
    registry, loaded = load(env)
    assert loaded == []
    assert any("module name 'json' is already provided by" in p for p in registry.problems)


def test_plugin_cannot_replace_a_builtin(env: Env) -> None:
    install(env, "reply", {"my_reply.py": GOOD_CHANNEL})
    registry = Registry()
    registry.register(Kind.CHANNEL, "reply", object, "builtin")
    _, loaded = load(env, registry)
    assert loaded == []
    assert registry.entries[(Kind.CHANNEL, "reply")].source == "builtin"
    assert any("provided by both builtin and plugin:reply; keeping the first" in p for p in registry.problems)


def test_incompatible_after_assistant_upgrade(env: Env) -> None:
    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    from ai_assistant.plugins.manager import PluginManager

    manager = PluginManager(env.data_dir, load_plugin_settings(env.config_dir), assistant_version="0.0.1")
    assert [c.status for c in manager.check_all()] == ["enabled"]
    strict = env.custom_source("strict", {"strict_mod.py": GOOD_CHANNEL})
    toml = (strict / "plugin.toml").read_text().replace('">=0"', '">=0.0.1,<0.0.2"')
    (strict / "plugin.toml").write_text(toml)
    manager.install(env.archive(strict).as_uri(), "channel", "strict")
    later = PluginManager(env.data_dir, load_plugin_settings(env.config_dir), assistant_version="1.0.0")
    assert {c.record.name: c.status for c in later.check_all()} == {"audit-log": "enabled", "strict": "incompatible"}


def test_entry_point_packages_are_discovered_and_broken_ones_skipped(tmp_path: Path) -> None:
    """A plugin installed as a Python package: its dist-info declares entry points in our groups."""
    site = tmp_path / "site"
    dist = site / "acme_ai_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ai-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ai_assistant.channels]\nacme-audit = acme_ai_plugins.good:Plugin\n"
        "[ai_assistant.input_adapters]\nacme-broken = acme_ai_plugins.bad:Adapter\n"
    )
    pkg = site / "acme_ai_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(GOOD_CHANNEL)
    (pkg / "bad.py").write_text("raise ImportError('missing native library')\n")
    sys.path.insert(0, str(site))
    registry = Registry()
    registry.load_entry_points()
    assert registry.entries[(Kind.CHANNEL, "acme-audit")].source == "package:acme-ai-plugins"
    assert (Kind.INPUT_ADAPTER, "acme-broken") not in registry.entries
    assert any("acme-broken from package:acme-ai-plugins failed to load" in p for p in registry.problems)
    assert (Kind.CHANNEL, "reply") in registry.entries  # the built-ins still load next to them


def test_registry_with_plugins_has_builtins_and_archive_plugins(env: Env) -> None:
    from ai_assistant.plugins import registry_with_plugins

    install(env, "audit-log", {"audit_log.py": GOOD_CHANNEL})
    registry = registry_with_plugins(env.config_dir, env.data_dir)
    assert registry.entries[(Kind.CHANNEL, "reply")].source == "builtin"
    assert registry.entries[(Kind.CHANNEL, "audit-log")].source == "plugin:audit-log"
