"""The console's pages in navigation order: an explicit list, no registration by import side effect. A new page is a
module with a `router(console) -> APIRouter` factory, its templates, its i18n keys, and one line here."""

from __future__ import annotations

from . import (
    connector_test,
    conversations_page,
    dead_letters_page,
    knowledge_page,
    plugins_page,
    words_page,
    workflows_page,
)
from .web import AUDIT_PAGE, CORE_PAGES, Page

PAGES: tuple[Page, ...] = (
    *CORE_PAGES,
    Page(None, "/connectors", connector_test.router),
    Page("knowledge", "/knowledge", knowledge_page.router),
    Page("conversations", "/conversations", conversations_page.router),
    Page("dead_letters", "/dead-letters", dead_letters_page.router),
    Page("plugins", "/plugins", plugins_page.router),
    Page("words", "/words", words_page.router),
    Page("workflows", "/workflows", workflows_page.router),
    AUDIT_PAGE,
)
