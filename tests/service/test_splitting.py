from __future__ import annotations

import random

import pytest

from ai_assistant.connectors.splitting import split_text, utf8_bytes, utf16_units


def test_short_text_is_one_piece() -> None:
    assert split_text("hello", 100) == ["hello"]


def test_pieces_respect_the_limit_and_keep_all_words() -> None:
    text = " ".join(f"word{i}" for i in range(500))
    pieces = split_text(text, 120)
    assert all(len(p) <= 120 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_utf8_limit_never_breaks_a_character() -> None:
    text = "私有知识库助手支持中文和英文。" * 200
    pieces = split_text(text, 2048, utf8_bytes)
    assert all(utf8_bytes(p) <= 2048 for p in pieces)
    assert "".join(pieces) == text
    assert all(p.endswith("。") for p in pieces[:-1]), "cuts prefer CJK sentence ends"


def test_utf16_limit_counts_emoji_as_two_units() -> None:
    text = "😀" * 5000
    pieces = split_text(text, 4096, utf16_units)
    assert all(utf16_units(p) <= 4096 for p in pieces) and "".join(pieces) == text


def test_code_block_is_closed_and_reopened_across_pieces() -> None:
    code = "\n".join(f"print({i})" for i in range(300))
    text = f"Here is the script:\n\n```python\n{code}\n```\n\nDone."
    pieces = split_text(text, 500)
    assert len(pieces) > 2
    for piece in pieces:
        assert len(piece) <= 500
        assert piece.count("```") % 2 == 0, f"unbalanced fence in {piece[:40]!r}"
    assert pieces[1].startswith("```python\n")
    rejoined = "\n".join(p.replace("```python\n", "").replace("\n```", "") for p in pieces)
    for i in range(300):
        assert f"print({i})" in rejoined


@pytest.mark.parametrize("seed", range(20))
def test_random_text_property(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab c\n。，éß漢字😀"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3000)))
    limit = rng.randint(16, 400)
    pieces = split_text(text, limit, utf8_bytes)
    assert all(utf8_bytes(p) <= limit for p in pieces)
    assert "".join(text.split()) == "".join("".join(pieces).split()), "only whitespace may be dropped at cuts"


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_text("abc", 3)
