from __future__ import annotations

from pathlib import Path

import pytest

from ai_assistant.errors import ConfigError
from ai_assistant.pipeline.filters import SensitiveWordFilter


def test_mask_replaces_every_occurrence_case_insensitively() -> None:
    f = SensitiveWordFilter(["secret", "身份证"], "mask")
    result = f.apply("My SECRET is my 身份证 and secret.")
    assert result.text == "My ****** is my *** and ******." and not result.blocked and result.hits == 3


def test_block_flags_the_text() -> None:
    result = SensitiveWordFilter(["secret"], "block").apply("a Secret thing")
    assert result.blocked and result.text == "a Secret thing"


def test_clean_text_and_empty_list_pass_through() -> None:
    assert SensitiveWordFilter(["secret"], "mask").apply("hello").hits == 0
    assert SensitiveWordFilter([], "block").apply("secret").blocked is False


def test_word_file_comments_are_ignored(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("# comment line\nforbidden\n\n")
    f = SensitiveWordFilter.from_file(words, "mask")
    assert f.apply("# comment line").hits == 0 and f.apply("forbidden").hits == 1


def test_missing_word_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"filters\.words_file: file not found"):
        SensitiveWordFilter.from_file(tmp_path / "nope.txt", "mask")
