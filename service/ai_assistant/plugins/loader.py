"""Loading enabled archive plugins into the one Registry, next to the built-ins and entry-point packages.

Each plugin is verified again at every load (files against the digest recorded at install, signature against the
trusted keys in force now), so an altered file or a revoked key stops a plugin at the next start. A plugin that fails
any check, or raises while it is imported, is reported in `registry.problems` and skipped; the service starts anyway.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from ..registry import Registry, default_registry
from .errors import PluginError
from .manager import PluginManager, PluginRecord
from .manifest import PLUGIN_TYPES
from .settings import PluginSettings, load_plugin_settings

log = logging.getLogger(__name__)


def load_archive_plugins(registry: Registry, data_dir: Path, settings: PluginSettings) -> list[str]:
    """Register every enabled, intact, trusted archive plugin. Returns the names loaded."""
    manager = PluginManager(data_dir, settings)
    try:
        checked = manager.check_all()
    except PluginError as exc:
        _problem(registry, f"plugins: {exc}")
        return []
    loaded: list[str] = []
    for item in checked:
        record = item.record
        if item.status == "disabled":
            continue
        if item.status != "enabled":
            _problem(registry, f"plugin {record.name} ({item.status}) skipped: {item.detail}")
            continue
        try:
            factory = _import(manager.installed / record.directory, record)
        except Exception as exc:  # plugin code can raise anything at import; it must not take the service down
            _problem(registry, f"plugin {record.name} failed to load: {type(exc).__name__}: {exc}")
            continue
        before = len(registry.problems)
        registry.register(PLUGIN_TYPES[record.type], record.name, factory, source=f"plugin:{record.name}")
        if len(registry.problems) == before:
            loaded.append(record.name)
            log.info("plugin %s %s loaded (signed by %s)", record.name, record.version, record.signer)
    return loaded


def registry_with_plugins(config_dir: Path, data_dir: Path) -> Registry:
    """Built-ins and entry-point packages first, then the enabled archive plugins: what the service should start with.
    A damaged plugins.yaml raises ConfigError (the service refuses to start on bad configuration, as everywhere)."""
    registry = default_registry()
    load_archive_plugins(registry, data_dir, load_plugin_settings(config_dir))
    return registry


def _import(directory: Path, record: PluginRecord) -> Any:
    module_name, _, attribute = record.entry_point.partition(":")
    top = module_name.split(".")[0]
    existing = sys.modules.get(top)
    spec = importlib.util.find_spec(top) if existing is None else existing.__spec__
    if spec is not None and not _inside(spec.origin, directory):
        # Importing would silently run someone else's module (or shadow ours); refuse instead of guessing.
        raise PluginError(f"module name {top!r} is already provided by {spec.origin or 'another package'}")
    if str(directory) not in sys.path:
        sys.path.append(str(directory))
    importlib.invalidate_caches()
    previous = sys.dont_write_bytecode
    # Byte code written into the plugin's directory would make it differ from what was verified.
    sys.dont_write_bytecode = True
    try:
        module = importlib.import_module(module_name)
    except BaseException:
        sys.path.remove(str(directory))
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]
        raise
    finally:
        sys.dont_write_bytecode = previous
    if not _inside(getattr(module, "__file__", None), directory):
        raise PluginError(f"module {module_name!r} was not imported from the plugin's directory")
    obj: Any = module
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _inside(path: str | None, directory: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _problem(registry: Registry, message: str) -> None:
    log.warning(message)
    registry.problems.append(message)
