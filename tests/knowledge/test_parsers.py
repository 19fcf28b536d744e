"""Every supported type parses to Markdown-shaped text; every bad file is one clear ParseError naming it."""

from __future__ import annotations

import pytest

from ai_assistant.knowledge.errors import ParseError, UnsupportedFile
from ai_assistant.knowledge.parsers import parse

from .builders import make_docx, make_pdf


def test_text_utf8_and_gb18030() -> None:
    assert parse("年假十天\n".encode(), "a.txt").text == "年假十天\n"
    assert parse("年假十天\n".encode("gb18030"), "b.txt").text == "年假十天\n"
    assert parse(b"\xef\xbb\xbfhello\r\nworld", "c.txt").text == "hello\nworld"
    assert parse(b"x", "leave_policy-2026.txt").title == "leave policy 2026"
    assert parse("IT 服务台常见问题\n\n如何重置密码？".encode(), "faq.txt").title == "IT 服务台常见问题"
    assert parse(b"one long first line\nsecond line", "notes.txt").title == "notes"


def test_markdown_front_matter_and_h1() -> None:
    doc = parse(b"---\ntitle: VPN\nurl: https://wiki/vpn\n---\n# Other\n\nbody", "v.md")
    assert (doc.title, doc.url) == ("VPN", "https://wiki/vpn")
    assert doc.text.startswith("# Other")
    assert parse(b"# Heading one\n\ntext", "h.md").title == "Heading one"


def test_html_keeps_headings_drops_scripts_styles_and_navigation() -> None:
    html = (
        b"<html><head><title>Expenses</title><link rel='canonical' href='https://wiki/exp'>"
        b"<style>p{}</style><script>alert('x')</script></head><body><nav>Home</nav>"
        b"<h1>Expenses</h1><p>Hotels: 600 CNY.</p><h2>Taxis</h2><p>Invoice needed.</p></body></html>"
    )
    doc = parse(html, "e.html")
    assert doc.title == "Expenses" and doc.url == "https://wiki/exp"
    assert "# Expenses" in doc.text and "## Taxis" in doc.text and "600 CNY" in doc.text
    assert "alert" not in doc.text and "Home" not in doc.text and "p{}" not in doc.text


def test_pdf_text_and_title() -> None:
    doc = parse(make_pdf(["Remote work policy", "Employees may work from home two days a week."], "Remote"), "r.pdf")
    assert doc.title == "Remote"
    assert "two days a week" in doc.text


def test_docx_headings_paragraphs_and_tables() -> None:
    data = make_docx(
        "Onboarding",
        [("First day", ["Collect your badge at reception."]), ("Laptop", ["IT hands it over at 10:00."])],
        table=[["Item", "Owner"], ["Badge", "Security"]],
    )
    doc = parse(data, "o.docx")
    assert doc.title == "Onboarding"
    assert "## First day" in doc.text and "Collect your badge" in doc.text
    assert "Badge | Security" in doc.text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("photo.png", b"\x89PNG....", "unsupported file type '.png'"),
        ("noext", b"hello", "unsupported file type '(none)'"),
        ("empty.md", b"  \n ", "empty file"),
        ("binary.txt", b"abc\x00\x01\x02def", "binary content"),
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf", "not a readable PDF"),
        ("text.pdf", b"just text, renamed to pdf", "not a readable PDF"),
        ("broken.docx", b"PK\x03\x04 not really a zip", "not a readable DOCX"),
        ("blank.pdf", make_pdf([]), "no extractable text"),
        ("latin1.txt", "caf\xe9 \xff\xfe\xfd".encode("latin-1") * 3, "not valid UTF-8 or GB18030"),
    ],
)
def test_bad_files_raise_one_line_naming_the_file(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(data, name)
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert reason in message
    assert "\n" not in message


def test_unsupported_is_its_own_subclass() -> None:
    with pytest.raises(UnsupportedFile):
        parse(b"x", "a.exe")
