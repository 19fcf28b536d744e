"""Archive plugins: a signed zip with a manifest, installed atomically under the data dir and loaded into the same
Registry as the built-ins (docs/plugins.md, docs/adr/0081-plugin-archives-and-trust.md)."""

from .errors import PluginError
from .loader import load_archive_plugins, registry_with_plugins
from .manager import PluginManager, PluginRecord
from .manifest import PluginManifest
from .settings import PluginSettings, load_plugin_settings

__all__ = [
    "PluginError",
    "PluginManager",
    "PluginManifest",
    "PluginRecord",
    "PluginSettings",
    "load_archive_plugins",
    "load_plugin_settings",
    "registry_with_plugins",
]
