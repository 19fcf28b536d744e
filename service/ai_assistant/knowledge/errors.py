"""Errors of the knowledge base. Each message is one line that names the file, key or field at fault."""

from __future__ import annotations

from ..errors import AssistantError


class KnowledgeError(AssistantError):
    """Root of the knowledge base's own errors."""


class ParseError(KnowledgeError):
    """A document that cannot be turned into text. `source` names the file; the message says why, on one line."""

    def __init__(self, source: str, problem: str) -> None:
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")


class UnsupportedFile(ParseError):
    """A file type the parsers do not handle (skipped, never guessed)."""


class StoreError(KnowledgeError):
    """The vector store refused an operation or cannot be reached."""


class EmbedderError(KnowledgeError):
    """The embedding model or server failed."""
