"""`ai-assistant kb ...`: ingest, list, delete, search, backup. Mounted by the lead's CLI as the `kb` sub-command.

Options `--config-dir`/`--data-dir` (env AI_ASSISTANT_CONFIG_DIR / AI_ASSISTANT_DATA_DIR) are accepted here and also
taken from a parent context object that carries `config_dir`, `data_dir` and optionally `knowledge` settings.
Exit codes: 0 done, 1 some files skipped or a document not found, 2 configuration or store error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ConfigError
from .errors import KnowledgeError
from .ingest import SourceFile, collect
from .retrieval import KnowledgeBase
from .settings import KnowledgeSettings, load_knowledge_settings

kb_app = typer.Typer(help="The private knowledge base: ingest documents, list, delete, search.", no_args_is_help=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class KbContext:
    config_dir: Path
    data_dir: Path
    settings: KnowledgeSettings | None = None


@kb_app.callback()
def _options(
    ctx: typer.Context,
    config_dir: Annotated[
        Path | None, typer.Option("--config-dir", help="folder with assistant.yaml [env AI_ASSISTANT_CONFIG_DIR]")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="state folder [env AI_ASSISTANT_DATA_DIR]")
    ] = None,
) -> None:
    parent = ctx.obj
    # The lead's CLI may pass its own settings object down; our own options win when given.
    parent_settings = getattr(parent, "settings", parent)
    ctx.obj = KbContext(
        config_dir=config_dir
        or getattr(parent, "config_dir", None)
        or getattr(parent_settings, "config_dir", None)
        or Path(os.environ.get("AI_ASSISTANT_CONFIG_DIR", "config")),
        data_dir=data_dir
        or getattr(parent, "data_dir", None)
        or getattr(parent_settings, "data_dir", None)
        or Path(os.environ.get("AI_ASSISTANT_DATA_DIR", "data")),
        settings=None if config_dir else _knowledge_of(parent) or _knowledge_of(parent_settings),
    )


def _knowledge_of(obj: object) -> KnowledgeSettings | None:
    value = getattr(obj, "knowledge", None)
    return value if isinstance(value, KnowledgeSettings) else None


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


@contextmanager
def _kb(ctx: typer.Context) -> Iterator[KnowledgeBase]:
    obj: KbContext = ctx.obj
    try:
        settings = obj.settings or load_knowledge_settings(obj.config_dir)
        kb = KnowledgeBase.from_settings(settings, obj.data_dir)
    except (ConfigError, KnowledgeError) as exc:
        raise _fail(str(exc)) from None
    try:
        yield kb
    except KnowledgeError as exc:
        raise _fail(str(exc)) from None
    finally:
        kb.close()


@kb_app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="files or folders (txt, md, html, pdf, docx)")],
    base_url: Annotated[
        str | None, typer.Option(help="link shown in answers: <base-url>/<path relative to the folder>")
    ] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="default: on a terminal")] = None,
) -> None:
    """Add or update documents. Unchanged files are skipped; unreadable ones are reported and exit 1 at the end."""
    show = sys.stderr.isatty() if progress is None else progress
    with _kb(ctx) as kb:
        files, problems = collect(paths, base_url)
        for problem in problems:
            err.print(problem.line(), markup=False)
        if show:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                # Asked for explicitly: draw it even when stderr is not a terminal (a CI log, a pipe).
                console=err if progress is None else Console(stderr=True, force_terminal=True),
                transient=True,
            ) as bar:
                files_task = bar.add_task("files", total=len(files))
                chunks_task = bar.add_task("chunks", total=None)
                done: set[str] = set()

                def on_file(file: SourceFile) -> None:
                    if done:
                        bar.advance(files_task)
                    done.add(file.source)
                    bar.update(chunks_task, description=file.source, completed=0, total=None)

                def on_chunks(source: str, embedded: int, total: int) -> None:
                    bar.update(chunks_task, completed=embedded, total=total)

                report = kb.ingest_sync([], files=files, on_file=on_file, progress=on_chunks)
                bar.update(files_task, completed=len(files))
        else:
            report = kb.ingest_sync([], files=files)
    for outcome in report.outcomes:
        if outcome.status in ("skipped", "failed"):
            err.print(outcome.line(), markup=False)
        elif outcome.status != "unchanged":
            typer.echo(outcome.line())
    typer.echo(report.summary())
    if problems or not report.ok:
        raise typer.Exit(1)


@kb_app.command("list")
def list_documents(ctx: typer.Context) -> None:
    """One line per document: id, chunks, title, source."""
    with _kb(ctx) as kb:
        docs = kb.list_documents_sync()
    for doc in docs:
        link = f"  {doc.url}" if doc.url else ""
        typer.echo(f"{doc.doc_id}  {doc.chunks:4d}  {doc.source}  {doc.title}{link}")
    err.print(f"{len(docs)} documents", markup=False)


@kb_app.command()
def delete(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="document id, source or title as shown by `kb list`")],
) -> None:
    """Remove documents and all their chunks."""
    missing = 0
    with _kb(ctx) as kb:
        for ref in refs:
            doc = kb.delete_sync(ref)
            if doc is None:
                err.print(f"not found: {ref}", markup=False)
                missing += 1
            else:
                typer.echo(f"deleted: {doc.source} ({doc.doc_id}, {doc.chunks} chunks)")
    if missing:
        raise typer.Exit(1)


@kb_app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="a question in any language")],
    k: Annotated[int | None, typer.Option("-k", "--top-k", min=1, max=100, help="default: knowledge.top_k")] = None,
    min_score: Annotated[float | None, typer.Option(help="default: knowledge.min_score")] = None,
) -> None:
    """Ranked results, one per line: source file, score, heading and the start of the chunk."""
    with _kb(ctx) as kb:
        hits = kb.search_sync(query, k=k, min_score=min_score)
        threshold = kb.settings.min_score if min_score is None else min_score
    if not hits:
        err.print(f"no relevant documents (min_score {threshold})", markup=False)
        return
    for hit in hits:
        name = hit.chunk.source.rstrip("/").rsplit("/", 1)[-1]
        snippet = " ".join(hit.chunk.text.split())[:100]
        heading = f"[{hit.chunk.heading}] " if hit.chunk.heading else ""
        typer.echo(f"{name}  {hit.score:.3f}  {heading}{snippet}")


@kb_app.command()
def backup(
    ctx: typer.Context,
    destination: Annotated[str, typer.Argument(help="embedded: a file or folder; weaviate: a backup id")],
) -> None:
    """A consistent backup of the store (SQLite online backup, or Weaviate's backup API)."""
    with _kb(ctx) as kb:
        where = kb.backup_sync(destination)
    typer.echo(f"backup written: {where}")
