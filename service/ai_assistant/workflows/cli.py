"""`ai-assistant workflow validate|list|trace`: check workflow documents before deploying them, and read a run's trace
from the store (works whether the service runs or not)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from .api import summary, trace
from .loader import load_file, load_workflows, workflow_files

out = Console()

workflow_app = typer.Typer(
    name="workflow",
    help="Workflows (config/workflows/*.yaml): validate them, list them, show a message's run.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigDir = Annotated[
    Path, typer.Option("--config-dir", envvar="AI_ASSISTANT_CONFIG_DIR", help="holds assistant.yaml and workflows/")
]
DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="AI_ASSISTANT_DATA_DIR", help="where the SQLite store lives")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@workflow_app.command()
def validate(
    files: Annotated[
        list[Path] | None, typer.Argument(help="workflow files (default: every one in the config dir)")
    ] = None,
    config_dir: ConfigDir = Path("config"),
) -> None:
    """Validate workflow documents as the service does at start; the first error names the file and the node."""
    paths = files or workflow_files(config_dir)
    if not paths:
        raise _fail(f"no workflow files in {config_dir / 'workflows'}")
    for path in paths:
        try:
            flow = load_file(path)
        except ConfigError as exc:
            raise _fail(str(exc)) from None
        out.print(f"{path.name}: {flow.id} v{flow.version} ok ({len(flow.nodes)} nodes)")


@workflow_app.command("list")
def list_cmd(config_dir: ConfigDir = Path("config")) -> None:
    """The workflows the service would load, in the order their triggers are tried."""
    try:
        flows = load_workflows(config_dir)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    table = Table("id", "version", "enabled", "nodes", "trigger")
    for flow in flows:
        row = summary(flow)
        table.add_row(row["id"], str(row["version"]), str(row["enabled"]), str(row["nodes"]),
                      json.dumps(row["trigger"], ensure_ascii=False))  # fmt: skip
    out.print(table)


@workflow_app.command("trace")
def trace_cmd(
    event_id: Annotated[str, typer.Argument(help="the message's event id")],
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per step")] = False,
) -> None:
    """Each node a message's workflow run went through: inputs, outputs, the edge taken, the time it took."""
    from ..localsecrets import load_local_secrets
    from ..settings import load_settings
    from ..store import open_store

    load_local_secrets(data_dir)
    settings = load_settings(config_dir, data_dir)

    async def read() -> list[dict[str, Any]]:
        store = open_store(settings)
        try:
            return await trace(store, event_id)
        finally:
            await store.close()

    steps = asyncio.run(read())
    if not steps:
        raise _fail(f"no workflow run recorded for event {event_id}")
    if as_json:
        for step in steps:
            typer.echo(json.dumps(step, ensure_ascii=False))
        return
    table = Table("step", "node", "kind", "edge", "next", "ms", "inputs", "outputs")
    for s in steps:
        table.add_row(str(s["step"]), s["node"], s["kind"], s["label"], str(s["next"]),
                      f"{(s['finished'] - s['started']) * 1000:.0f}",
                      json.dumps(s["inputs"], ensure_ascii=False)[:200],
                      json.dumps(s["outputs"], ensure_ascii=False)[:200])  # fmt: skip
    out.print(table)
    out.print(f"workflow {steps[0]['workflow']} v{steps[0]['version']}, {len(steps)} step(s)")
