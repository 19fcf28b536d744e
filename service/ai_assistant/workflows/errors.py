"""The one error a workflow document raises: it names the file and the node (or key), on one line."""

from __future__ import annotations

from ..errors import ConfigError


class WorkflowError(ConfigError):
    """A workflow that does not validate. `key` is `node <id>` (and the field) or a top-level key."""


class NodeFailed(Exception):
    """A node could not do its work (an HTTP call timed out, returned garbage): the run takes the node's error edge,
    or ends with a clear message to the user."""
