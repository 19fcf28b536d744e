"""Private knowledge base: ingest company documents, embed them, store them, retrieve and ground answers.

Layers, top to bottom: `cli.py`/`api.py` (edges) -> `retrieval.KnowledgeBase` (the one object the service holds) ->
`ingest.py` (parse, chunk, embed) -> `embedders.py` and `stores/` (extension points). See docs/knowledge.md.
"""

from .errors import KnowledgeError, ParseError, StoreError, UnsupportedFile

__all__ = ["KnowledgeError", "ParseError", "StoreError", "UnsupportedFile"]
