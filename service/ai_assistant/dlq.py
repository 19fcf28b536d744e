"""Dead letters, operable: `ai-assistant dlq list|show|replay|drop` and the same under /admin/dlq (admin token).

A dead letter is a message that gave up after `worker.max_attempts` (its user was told once that the answer failed).
Both faces work on the store directly, so the CLI works whether the service runs or not, and on Redis from any host
that reaches it. Replay keeps the answer checkpoint and the parts already sent: the user gets only what is missing. A
dead letter without an answer is past its answer deadline, so a replay gives the model one more try, then the
apology (engine.error_reply)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from rich.console import Console
from rich.table import Table

from .store import DeadLetter, StateStore, open_store

T = TypeVar("T")

out = Console()


def summary(dead: DeadLetter) -> dict[str, Any]:
    """What a list shows: enough to find the message and see why it failed, not its text."""
    return {
        "id": dead.id,
        "event_id": dead.message.event_id,
        "connector": dead.message.connector,
        "chat_id": dead.message.chat_id,
        "attempts": dead.attempts,
        "dead_at": datetime.fromtimestamp(dead.dead_at, tz=UTC).isoformat(timespec="seconds"),
        "last_error": dead.last_error,
    }


def detail(dead: DeadLetter) -> dict[str, Any]:
    """Everything, for one message: its text, the checkpointed answer and how many parts reached the user."""
    return summary(dead) | {
        "user_id": dead.message.user_id,
        "text": dead.message.text,
        "received_at": datetime.fromtimestamp(dead.message.received_at, tz=UTC).isoformat(timespec="seconds"),
        "answer": dead.answer,
        "parts_sent": dead.parts_sent,
    }


def dlq_router(store: StateStore, require_admin: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/admin/dlq", tags=["dead letters"], dependencies=[Depends(require_admin)])

    def missing(job_id: str) -> JSONResponse:
        return JSONResponse({"error": f"no dead letter with id {job_id}", "field": "id"}, status_code=404)

    @router.get("")
    async def list_dead(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        return {
            "count": await store.dead_letter_count(),
            "dead_letters": [summary(d) for d in await store.dead_letters(limit)],
        }

    @router.get("/{job_id}", response_model=None)
    async def show(job_id: str) -> dict[str, Any] | JSONResponse:
        dead = await store.get_dead_letter(job_id)
        return detail(dead) if dead is not None else missing(job_id)

    @router.post("/{job_id}/replay", response_model=None)
    async def replay(job_id: str) -> dict[str, Any] | JSONResponse:
        return {"id": job_id, "replayed": True} if await store.replay(job_id) else missing(job_id)

    @router.delete("/{job_id}", response_model=None)
    async def drop(job_id: str) -> dict[str, Any] | JSONResponse:
        return {"id": job_id, "dropped": True} if await store.drop(job_id) else missing(job_id)

    return router


dlq_app = typer.Typer(
    name="dlq",
    help="Dead letters: messages that gave up after worker.max_attempts. List, show, replay or drop them.",
    no_args_is_help=True,
    add_completion=False,
)


class _Dirs:
    def __init__(self, config_dir: Path, data_dir: Path) -> None:
        self.config_dir, self.data_dir = config_dir, data_dir


@dlq_app.callback()
def _options(
    ctx: typer.Context,
    config_dir: Annotated[
        Path, typer.Option("--config-dir", envvar="AI_ASSISTANT_CONFIG_DIR", help="holds assistant.yaml")
    ] = Path("config"),
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="AI_ASSISTANT_DATA_DIR", help="where the SQLite store lives")
    ] = Path("data"),
) -> None:
    ctx.obj = _Dirs(config_dir, data_dir)


def _with_store(ctx: typer.Context, use: Callable[[StateStore], Coroutine[Any, Any, T]]) -> T:
    from .localsecrets import load_local_secrets
    from .settings import load_settings

    dirs = ctx.find_object(_Dirs) or _Dirs(Path("config"), Path("data"))
    load_local_secrets(dirs.data_dir)
    settings = load_settings(dirs.config_dir, dirs.data_dir)

    async def run() -> T:
        store = open_store(settings)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


JobId = Annotated[str, typer.Argument(help="the dead letter's id (first column of `dlq list`)")]


@dlq_app.command("list")
def list_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="show at most this many, newest first")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List dead letters, newest first."""

    async def use(store: StateStore) -> tuple[int, list[DeadLetter]]:
        return await store.dead_letter_count(), await store.dead_letters(limit)

    count, dead = _with_store(ctx, use)
    if as_json:
        for d in dead:
            typer.echo(json.dumps(summary(d), ensure_ascii=False))
        return
    table = Table("id", "event", "connector", "chat", "attempts", "dead at (UTC)", "last error")
    for d in dead:
        row = summary(d)
        table.add_row(*(str(row[k]) for k in ("id", "event_id", "connector", "chat_id", "attempts", "dead_at")),
                      row["last_error"])  # fmt: skip
    out.print(table)
    out.print(f"{count} dead letter(s)" + (f", {len(dead)} shown" if len(dead) < count else ""))


@dlq_app.command()
def show(ctx: typer.Context, job_id: JobId) -> None:
    """Print one dead letter as JSON: its message, last error, checkpointed answer and parts sent."""
    dead = _with_store(ctx, lambda store: store.get_dead_letter(job_id))
    if dead is None:
        _fail(f"no dead letter with id {job_id}")
    typer.echo(json.dumps(detail(dead), ensure_ascii=False, indent=2))


@dlq_app.command()
def replay(ctx: typer.Context, job_id: JobId) -> None:
    """Queue a dead letter again (attempts reset); parts already delivered are not sent twice."""
    if not _with_store(ctx, lambda store: store.replay(job_id)):
        _fail(f"no dead letter with id {job_id}")
    out.print(f"replayed {job_id}: queued for the workers")


@dlq_app.command()
def drop(ctx: typer.Context, job_id: JobId) -> None:
    """Delete a dead letter for good."""
    if not _with_store(ctx, lambda store: store.drop(job_id)):
        _fail(f"no dead letter with id {job_id}")
    out.print(f"dropped {job_id}")
