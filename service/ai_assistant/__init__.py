"""The private enterprise AI assistant: IM webhooks in, grounded model answers out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ai-assistant")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
