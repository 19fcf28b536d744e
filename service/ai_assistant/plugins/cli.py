"""`ai-assistant plugin ...`: install, list, enable, disable, remove, upgrade; keygen and build for publishers."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from ..errors import AssistantError
from .archive import build
from .manager import PluginManager
from .settings import load_plugin_settings
from .signing import generate_key, load_private_key

plugin_app = typer.Typer(
    name="plugin",
    help="Install and manage plugins (connectors, input adapters, engines, output channels).",
    no_args_is_help=True,
    add_completion=False,
)


class PluginTypeArg(StrEnum):
    connector = "connector"
    input_adapter = "input_adapter"
    engine = "engine"
    channel = "channel"
    embedder = "embedder"
    vector_store = "vector_store"


class _Dirs:
    def __init__(self, config_dir: Path, data_dir: Path) -> None:
        self.config_dir = config_dir
        self.data_dir = data_dir

    def manager(self) -> PluginManager:
        return PluginManager(self.data_dir, load_plugin_settings(self.config_dir))


def _fail(exc: Exception) -> NoReturn:
    # OSError: an unwritable or misplaced data dir; its message names the path, which is all the operator needs.
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def _dirs(ctx: typer.Context) -> _Dirs:
    obj = ctx.find_object(_Dirs)
    if obj is None:  # mounted under a parent app that did not run our callback
        return _Dirs(Path("config"), Path("data"))
    return obj


@plugin_app.callback()
def _options(
    ctx: typer.Context,
    config_dir: Annotated[
        Path, typer.Option("--config-dir", envvar="AI_ASSISTANT_CONFIG_DIR", help="holds plugins.yaml")
    ] = Path("config"),
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="AI_ASSISTANT_DATA_DIR", help="plugins live in DATA_DIR/plugins")
    ] = Path("data"),
) -> None:
    ctx.obj = _Dirs(config_dir, data_dir)


@plugin_app.command()
def install(
    ctx: typer.Context,
    plugin_type: Annotated[PluginTypeArg, typer.Option("--type", help="the extension point the plugin extends")],
    name: Annotated[str, typer.Option("--name", help="must match the name in the plugin's plugin.toml")],
    url: Annotated[str, typer.Option("--url", help="https:// or file:// URL of the plugin zip")],
    sha256: Annotated[str | None, typer.Option("--sha256", help="refuse the archive unless it has this sha256")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="install without enabling it")] = False,
) -> None:
    """Download, check (hash pin, archive safety, signature) and install a plugin atomically."""
    try:
        record = _dirs(ctx).manager().install(url, plugin_type.value, name, sha256=sha256, enabled=not disabled)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    perms = ", ".join(record.permissions) or "none"
    typer.echo(
        f"installed {record.name} {record.version} ({record.type}) from {record.source}, signed by {record.signer}; "
        f"permissions: {perms}; {'enabled' if record.enabled else 'disabled'} (takes effect at the next start)"
    )


@plugin_app.command()
def upgrade(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="an installed plugin")],
    url: Annotated[str | None, typer.Option("--url", help="default: the URL it was installed from")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256")] = None,
) -> None:
    """Replace an installed plugin with a newer version; on any failure the installed version stays."""
    try:
        record = _dirs(ctx).manager().upgrade(name, url=url, sha256=sha256)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    typer.echo(
        f"upgraded {record.name} to {record.version}, signed by {record.signer} (takes effect at the next start)"
    )


@plugin_app.command()
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Load the plugin at the next start."""
    try:
        _dirs(ctx).manager().set_enabled(name, True)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    typer.echo(f"enabled {name} (takes effect at the next start)")


@plugin_app.command()
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Keep the plugin installed but do not load it."""
    try:
        _dirs(ctx).manager().set_enabled(name, False)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    typer.echo(f"disabled {name} (takes effect at the next start)")


@plugin_app.command()
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Uninstall the plugin and delete its files."""
    try:
        record = _dirs(ctx).manager().remove(name)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    typer.echo(f"removed {record.name} {record.version}")


@plugin_app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output for audits")] = False,
) -> None:
    """Installed plugins: name, type, version, source, signer and status (files and signature checked now)."""
    try:
        checked = _dirs(ctx).manager().check_all()
    except (AssistantError, OSError) as exc:
        _fail(exc)
    if as_json:
        rows = [{**c.record.model_dump(), "status": c.status, "detail": c.detail} for c in checked]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not checked:
        typer.echo("no plugins installed")
        return
    table = Table("name", "type", "version", "source", "signed by", "installed", "status")
    for c in checked:
        r = c.record
        when = datetime.fromtimestamp(r.installed_at, tz=UTC).strftime("%Y-%m-%d %H:%M")
        signer = f"{r.signer} ({r.signer_key_id})" if r.signer_key_id else r.signer
        table.add_row(r.name, r.type, r.version, r.source, signer, when, c.status)
    Console(width=200).print(table)
    for c in checked:
        if c.detail:
            typer.echo(f"{c.record.name}: {c.detail}", err=True)


@plugin_app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="where to write the private key (PEM, mode 0600)")],
) -> None:
    """Create an ed25519 signing key; prints the public key line for trusted_keys in plugins.yaml."""
    try:
        public = generate_key(out)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    typer.echo(public)


@plugin_app.command("build")
def build_(
    source: Annotated[Path, typer.Argument(help="directory with plugin.toml at its root")],
    out: Annotated[Path, typer.Option("--out", help="the zip to write")],
    key: Annotated[Path | None, typer.Option("--key", help="private key from `plugin keygen`; omit: unsigned")] = None,
) -> None:
    """Build a reproducible plugin zip from a source directory and sign it."""
    try:
        private = load_private_key(key) if key is not None else None
        manifest, _ = build(source, out, private)
    except (AssistantError, OSError) as exc:
        _fail(exc)
    import hashlib

    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    typer.echo(f"built {out} ({manifest.name} {manifest.version}, {'signed' if key else 'UNSIGNED'}) sha256 {digest}")


def main() -> None:  # pragma: no cover - convenience until the lead mounts plugin_app in ai_assistant.cli
    plugin_app(prog_name="ai-assistant plugin")
    sys.exit(0)
