"""The one exception every plugin operation raises on purpose: its message is a single line fit for the CLI."""

from __future__ import annotations

from ..errors import AssistantError


class PluginError(AssistantError):
    """A plugin archive, URL, signature or state problem. Nothing was changed when this is raised by an install."""
