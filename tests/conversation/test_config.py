"""Bad conversation settings in connectors.yaml stop `ai-assistant check-config` (and the service) with one line
naming the file and the key, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SECRET, write_config
from tests.service.test_config_errors import check


def connectors(**options: Any) -> dict[str, Any]:
    base = {
        "platform": "generic_im",
        "app_secret": SECRET,
        "webhook_url": "https://x.example/api/im/callback",
        "reply_url": "http://127.0.0.1:9/replies",
    }
    return {"im-connector": {**base, **options}}


CASES = {
    "unknown answer mode": ({"answer_mode": "smart"}, "im-connector.answer_mode: Input should be 'knowledge_only'"),
    "unknown memory scope": ({"memory": {"scope": "team"}}, "im-connector.memory.scope: Input should be 'chat'"),
    "misspelt memory key": ({"memory": {"scop": "chat"}}, "im-connector.memory.scop: unknown key"),
    "bad chat override": (
        {"chats": {"oc_1": {"answer_mode": "always"}}},
        "im-connector.chats.oc_1.answer_mode: Input should be",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_conversation_settings_are_one_line_errors(case: str, tmp_path: Path) -> None:
    options, expected = CASES[case]
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        connectors=connectors(**options),
    )
    result = check(config, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "connectors.yaml" in lines[0] and expected in lines[0], lines[0]


def test_valid_conversation_settings_pass(tmp_path: Path) -> None:
    options = {
        "answer_mode": "general",
        "memory": {"scope": "thread"},
        "chats": {"oc_1": {"answer_mode": "knowledge_only"}},
    }
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        connectors=connectors(**options),
    )
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_console_form_keeps_nested_conversation_settings(tmp_path: Path) -> None:
    """The admin console's connector form is flat: `memory` and `chats` are edited in the file, and saving the form
    (what the browser posts back: every field it showed) keeps them as written."""
    from ai_assistant.console.connectors_file import ConnectorsFile, form_fields, form_values
    from ai_assistant.registry import default_registry

    options = {
        "answer_mode": "knowledge_only",
        "memory": {"scope": "chat"},
        "chats": {"oc_1": {"answer_mode": "general"}},
    }
    config = write_config(
        tmp_path / "c",
        reply_url="http://127.0.0.1:9/r",
        engine_url="http://127.0.0.1:9/v1",
        connectors=connectors(**options),
    )
    files = ConnectorsFile(config, tmp_path / "d", default_registry())
    model = files.model("generic_im")
    assert {"memory", "chats"}.isdisjoint(f.name for f in form_fields(model))
    shown = form_values(model, files.enabled()["im-connector"])
    posted = {k: ("on" if v is True else str(v)) for k, v in shown.items() if v is not False}
    posted["app_secret"] = ""  # a secret left empty keeps the current one
    entry, _ = files.build("im-connector", "generic_im", posted, creating=False)
    assert entry["memory"] == {"scope": "chat"} and entry["chats"] == {"oc_1": {"answer_mode": "general"}}
    assert entry["answer_mode"] == "knowledge_only"
