"""`ai-assistant kb ...` through typer's runner: exit codes, one-line errors, the search output format."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_assistant.knowledge.cli import kb_app

runner = CliRunner()


def kb(*args: str, seeded: Path) -> tuple[int, str, str]:
    result = runner.invoke(kb_app, ["--config-dir", str(seeded / "config"), "--data-dir", str(seeded / "data"), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def home(seeded: Path) -> Path:
    (seeded / "config").mkdir()
    return seeded


def test_search_prints_one_ranked_line_per_hit_starting_with_file_name_and_score(home: Path) -> None:
    code, out, _ = kb("search", "年假有几天？", "-k", "3", seeded=home)
    assert code == 0
    lines = out.splitlines()
    assert 1 <= len(lines) <= 3
    name, score, _rest = lines[0].split("  ", 2)
    assert name == "leave-policy.md" and 0.0 < float(score) <= 1.0
    scores = [float(line.split("  ")[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_search_without_relevant_documents_says_so(home: Path) -> None:
    code, out, err = kb("search", "how to bake bread", seeded=home)
    assert code == 0 and out == ""
    assert "no relevant documents (min_score 0.085)" in err


def test_ingest_unchanged_then_bad_files_exit_1_with_one_line_each(home: Path) -> None:
    code, out, _ = kb("ingest", "--no-progress", str(home / "corpus"), seeded=home)
    assert code == 0 and "5 unchanged" in out
    (home / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    (home / "slides.pptx").write_bytes(b"PK")
    (home / "faq.md").write_text("# Canteen\n\nThe canteen opens at 11:30.\n")
    code, out, err = kb(
        "ingest", "--no-progress", str(home / "bad.pdf"), str(home / "slides.pptx"), str(home / "faq.md"), seeded=home
    )
    assert code == 1
    assert "added: faq.md (1 chunks)" in out and "1 added" in out and "2 skipped" in out
    err_lines = err.splitlines()
    assert any(line.startswith("skipped: bad.pdf: not a readable PDF") for line in err_lines)
    assert any(line.startswith("skipped: slides.pptx: unsupported file type '.pptx'") for line in err_lines)
    code, out, _ = kb("list", seeded=home)
    assert code == 0 and len(out.splitlines()) == 6


def test_ingest_shows_a_progress_bar_when_asked(home: Path) -> None:
    (home / "new.md").write_text("# New\n\n" + "\n\n".join(f"Paragraph {i} about the canteen." * 20 for i in range(4)))
    code, _, err = kb("ingest", "--progress", str(home / "new.md"), seeded=home)
    assert code == 0
    assert "new.md" in err  # the bar's label (transient, but written to the terminal stream)


def test_list_and_delete(home: Path) -> None:
    code, out, _ = kb("list", seeded=home)
    assert code == 0
    line = next(li for li in out.splitlines() if "vpn-howto.md" in li)
    doc_id = line.split()[0]
    assert "https://wiki.example.com/it/vpn" in line
    code, out, _ = kb("delete", doc_id, seeded=home)
    assert code == 0 and out.startswith("deleted: corpus/vpn-howto.md")
    code, _, err = kb("delete", doc_id, seeded=home)
    assert code == 1 and f"not found: {doc_id}" in err


def test_missing_path_exits_1(home: Path) -> None:
    code, _, err = kb("ingest", "--no-progress", str(home / "nowhere"), seeded=home)
    assert code == 1 and "nowhere: no such file or folder" in err


def test_bad_config_exits_2_with_one_line(home: Path) -> None:
    (home / "config" / "assistant.yaml").write_text("knowledge:\n  top_k: many\n")
    code, out, err = kb("search", "vpn", seeded=home)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "knowledge.top_k" in err and len(err.strip().splitlines()) == 1


def test_backup(home: Path) -> None:
    (home / "backups").mkdir()
    code, out, _ = kb("backup", str(home / "backups"), seeded=home)
    assert code == 0 and out.startswith("backup written: ")
    assert len(list((home / "backups").glob("knowledge-*.sqlite3"))) == 1
