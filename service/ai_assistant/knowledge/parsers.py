"""Turn a file's bytes into Markdown-shaped text (headings as `#`) plus a title, one parser per type.

Every failure is a ParseError with one line naming the file and the reason; a parser never returns half a document.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

import yaml

from .errors import ParseError, UnsupportedFile


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    text: str  # Markdown-shaped: headings start with '#', paragraphs are blank-line separated
    url: str | None = None  # from front matter or <link rel=canonical>: shown instead of the path in sources


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)


def _decode(data: bytes, name: str) -> str:
    if b"\x00" in data[:8192]:
        raise ParseError(name, "binary content in a text file")
    # UTF-8 first; GB18030 covers files saved by Chinese editions of Windows tools (GBK is a subset).
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\n\r\t\f")
        if controls > 8:
            raise ParseError(name, "binary content in a text file")
        return text.replace("\r\n", "\n").replace("\r", "\n")
    raise ParseError(name, "not valid UTF-8 or GB18030 text")


def _stem(name: str) -> str:
    return PurePath(name).stem.replace("_", " ").replace("-", " ").strip() or name


def parse_text(data: bytes, name: str) -> ParsedDocument:
    """A short first line followed by a blank line is the title (the usual shape of a plain-text note)."""
    text = _decode(data, name)
    lines = text.split("\n", 2)
    first = lines[0].strip()
    if first and len(first) <= 80 and len(lines) > 2 and not lines[1].strip():
        return ParsedDocument(first, text)
    return ParsedDocument(_stem(name), text)


def parse_markdown(data: bytes, name: str) -> ParsedDocument:
    text = _decode(data, name)
    meta: dict[str, object] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            raise ParseError(name, "front matter is not valid YAML") from None
        if isinstance(loaded, dict):
            meta = loaded
        text = text[match.end() :]
    h1 = _H1.search(text)
    title = str(meta.get("title") or (h1.group(1) if h1 else _stem(name)))
    url = meta.get("url")
    return ParsedDocument(title, text, str(url) if url else None)


def parse_html(data: bytes, name: str) -> ParsedDocument:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(_decode(data, name), "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "template", "iframe"]):
        tag.decompose()
    title_tag = soup.find("title")
    h1 = soup.find("h1")
    title = (title_tag.get_text(strip=True) if title_tag else "") or (h1.get_text(strip=True) if h1 else "")
    canonical = soup.find("link", rel="canonical")
    url = canonical.get("href") if canonical else None
    body = soup.body or soup
    text = MarkdownConverter(heading_style="ATX", strip=["a", "img"]).convert_soup(body)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if not text:
        raise ParseError(name, "no text in the HTML body")
    return ParsedDocument(title or _stem(name), text, str(url) if isinstance(url, str) else None)


def parse_pdf(data: bytes, name: str) -> ParsedDocument:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(name, "PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        meta_title = (info.title if info else None) or ""
    except ParseError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files (PdfReadError, ValueError, KeyError, ...)
        raise ParseError(name, f"not a readable PDF ({type(exc).__name__}: {str(exc)[:120]})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise ParseError(name, "PDF has no extractable text (scanned pages need OCR, which ingestion does not do)")
    return ParsedDocument(str(meta_title).strip() or _stem(name), text)


def parse_docx(data: bytes, name: str) -> ParsedDocument:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        lines: list[str] = []
        title = (document.core_properties.title or "").strip()
        offset = 0
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [cell.text.strip() for cell in row.cells]
                    lines.append(" | ".join(cells))
                lines.append("")
                continue
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = re.match(r"Heading (\d)", style)
            if style == "Title":
                title = title or text
                offset = 1  # headings below a Title paragraph sit one level under it
                lines.append(f"# {text}\n")
            elif level:
                lines.append(f"{'#' * min(6, int(level.group(1)) + offset)} {text}\n")
            else:
                lines.append(f"{text}\n")
    except Exception as exc:  # python-docx/lxml/zipfile raise many types on damaged files
        raise ParseError(name, f"not a readable DOCX ({type(exc).__name__}: {str(exc)[:120]})") from None
    text = "\n".join(lines).strip()
    if not text:
        raise ParseError(name, "DOCX has no text")
    return ParsedDocument(title or _stem(name), text)


PARSERS: dict[str, Callable[[bytes, str], ParsedDocument]] = {
    ".txt": parse_text,
    ".text": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
}


def supported(name: str) -> bool:
    return PurePath(name).suffix.lower() in PARSERS


def parse(data: bytes, name: str) -> ParsedDocument:
    suffix = PurePath(name).suffix.lower()
    parser = PARSERS.get(suffix)
    if parser is None:
        known = ", ".join(sorted(PARSERS))
        raise UnsupportedFile(name, f"unsupported file type {suffix or '(none)'!r}; supported: {known}")
    if not data.strip():
        raise ParseError(name, "empty file")
    return parser(data, name)
