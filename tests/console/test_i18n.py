"""Every string a template asks for exists in English and in Chinese (a missing key would show as an empty label)."""

from __future__ import annotations

import re
from pathlib import Path

from ai_assistant.console import i18n
from ai_assistant.knowledge.ingest import Status

TEMPLATES = Path(i18n.__file__).parent / "templates"
STATIC_KEY = re.compile(r"\bt\.([a-z_]+)\b|\bt\['([a-z_]+)'\]")
# Keys templates build at run time: family prefix -> the values that complete it.
DYNAMIC = {
    "kb_": list(Status.__args__),  # type: ignore[attr-defined]
    "dlq_done_": ["replay", "drop"],
    "role_": ["user", "assistant"],
}


def test_every_template_key_is_translated() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        for found in STATIC_KEY.finditer(template.read_text()):
            used.add(found.group(1) or found.group(2))
    used |= {prefix + value for prefix, values in DYNAMIC.items() for value in values}
    used -= {"format"}  # t.kb_limits.format(...) is a str method, not a key
    assert used, "no keys found: the pattern no longer matches the templates"
    assert sorted(used - set(i18n.EN)) == []
    assert sorted(set(i18n.EN) - set(i18n.ZH)) == []
    assert sorted(set(i18n.ZH) - set(i18n.EN)) == []
