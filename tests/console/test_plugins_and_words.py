"""Plugins and sensitive-words pages through the real app: a real signed plugin archive installed by the real manager,
the real word file in the config dir, and the running pipeline's filter after a save."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ai_assistant.console.store import ConsoleStore
from ai_assistant.plugins.archive import build
from ai_assistant.plugins.manager import PluginManager
from ai_assistant.plugins.settings import load_plugin_settings
from ai_assistant.plugins.signing import public_key_text
from tests.console.conftest import VIEWER_PASSWORD, Console, make_console

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "im-connector"


def audit(console: Console) -> list[dict[str, object]]:
    return [e.as_dict() for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()]


def install_disabled_plugin(tmp_path: Path) -> None:
    """Installed but disabled, so the app under test does not import it (the page only changes the state file)."""
    key = Ed25519PrivateKey.generate()
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir(parents=True, exist_ok=True)
    trusted = {"trusted_keys": [{"name": "test-publisher", "public_key": public_key_text(key)}]}
    (config / "plugins.yaml").write_text(yaml.safe_dump(trusted))
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__"))
    build(src, tmp_path / "plugin.zip", key)
    manager = PluginManager(data, load_plugin_settings(config))
    manager.install((tmp_path / "plugin.zip").as_uri(), "connector", "im-connector", enabled=False)


def test_plugins_listed_with_keys_and_switched_on_and_off(tmp_path: Path) -> None:
    install_disabled_plugin(tmp_path)
    with make_console(tmp_path) as console:
        console.login()
        page = console.client.get("/admin/plugins")
        assert page.status_code == 200
        assert 'id="plugin-im-connector"' in page.text and "test-publisher" in page.text
        assert 'id="enable-im-connector"' in page.text
        enabled = console.post("/admin/plugins/im-connector/enable", page="/admin/plugins")
        assert enabled.status_code == 303
        state = PluginManager(console.data_dir, load_plugin_settings(console.config_dir)).read_state()
        assert state.plugins["im-connector"].enabled
        after = console.client.get("/admin/plugins?saved=1").text
        assert 'id="disable-im-connector"' in after and "not yet in the running service" in after
        assert console.post("/admin/plugins/im-connector/disable", page="/admin/plugins").status_code == 303
        assert console.post("/admin/plugins/nope/enable", page="/admin/plugins").status_code == 404
        entries = audit(console)
        assert [e["action"] for e in entries[:2]] == ["plugin.disable", "plugin.enable"]
        assert entries[1]["before"] == {"enabled": False} and entries[1]["after"] == {"enabled": True}


def test_plugin_switch_needs_csrf_and_an_admin(tmp_path: Path) -> None:
    install_disabled_plugin(tmp_path)
    with make_console(tmp_path) as console:
        console.login()
        forged = console.client.post("/admin/plugins/im-connector/enable", data={"csrf_token": "x"})
        assert forged.status_code == 403
        console.client.cookies.clear()
        console.login("victor", VIEWER_PASSWORD)
        assert 'id="enable-im-connector"' not in console.client.get("/admin/plugins").text
        assert console.post("/admin/plugins/im-connector/enable", page="/admin/plugins").status_code == 403
        state = PluginManager(console.data_dir, load_plugin_settings(console.config_dir)).read_state()
        assert not state.plugins["im-connector"].enabled


def test_words_saved_atomically_applied_at_once_and_audited(console: Console) -> None:
    console.login()
    pipeline = console.client.app.state.parts.pipeline
    assert pipeline.input_filter.apply("a forbiddenword here").hits == 1
    text = "# reviewed by legal\r\nSecretProject\r\n机密\r\n"  # a browser's textarea sends CRLF
    saved = console.post("/admin/words", {"words": text}, page="/admin/words")
    assert saved.status_code == 303
    words_file = console.config_dir / "sensitive_words.txt"
    assert words_file.read_text() == "# reviewed by legal\nSecretProject\n机密\n"
    assert not [p for p in console.config_dir.iterdir() if p.name.startswith(".sensitive_words")]  # no temp left
    # The running service filters with the new list without a restart.
    assert pipeline.input_filter.apply("a forbiddenword here").hits == 0
    assert pipeline.output_filter.apply("about secretproject and 机密").text == "about ************* and **"
    tested = console.client.get("/admin/words", params={"sample": "the SecretProject plan"})
    assert 'id="test-result"' in tested.text and "the ************* plan" in tested.text
    entry = audit(console)[0]
    assert entry["action"] == "words.save" and entry["before"] == {"words": 1}
    assert entry["after"] == {"words": 2, "added": ["secretproject", "机密"], "removed": ["forbiddenword"]}


def test_bad_word_lists_are_refused_naming_the_line_and_nothing_changes(console: Console) -> None:
    console.login()
    words_file = console.config_dir / "sensitive_words.txt"
    before = words_file.read_text()
    for text, problem in (
        ("fine\na\n", "line 2: &#39;a&#39; is a single character"),
        ("ok\nbad\u200bword\n", "line 2: contains a control or invisible character"),
        ("x" * 101 + "\n", "line 1: longer than 100 characters"),
    ):
        page = console.post("/admin/words", {"words": text}, page="/admin/words")
        assert page.status_code == 400 and 'id="error-words"' in page.text and problem in page.text, page.text
    assert words_file.read_text() == before
    assert console.client.app.state.parts.pipeline.input_filter.apply("forbiddenword").hits == 1
    assert not [e for e in audit(console) if e["action"] == "words.save"]
    empty = console.client.get("/admin/words", params={"sample": " "})
    assert empty.status_code == 400 and 'id="error-sample"' in empty.text


def test_words_changes_need_csrf_an_admin_and_a_writable_file(console: Console) -> None:
    words_file = console.config_dir / "sensitive_words.txt"
    before = words_file.read_text()
    console.login()
    forged = console.client.post("/admin/words", data={"words": "other", "csrf_token": "x"})
    assert forged.status_code == 403
    console.client.cookies.clear()
    console.login("victor", VIEWER_PASSWORD)
    assert console.post("/admin/words", {"words": "other"}, page="/admin/words").status_code == 403
    assert words_file.read_text() == before


def test_a_read_only_word_list_is_refused_not_half_written(console: Console) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes a read-only file anyway; the service runs as its own user (see docs/console.md)")
    words_file = console.config_dir / "sensitive_words.txt"
    before = words_file.read_text()
    console.login()
    words_file.chmod(0o444)
    console.config_dir.chmod(0o555)
    try:
        assert 'id="read-only"' in console.client.get("/admin/words").text
        page = console.post("/admin/words", {"words": "other"}, page="/admin/words")
        assert page.status_code == 409 and "read-only" in page.text
    finally:
        console.config_dir.chmod(0o755)
    assert words_file.read_text() == before
