"""`ai-assistant admin ...`: console accounts. Passwords come from a prompt or stdin, never from argv (which other
users can read in the process list and which shells keep in their history)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .store import ROLES, ConsoleStore, Role

admin_app = typer.Typer(help="Console accounts (sign-in at /admin).", no_args_is_help=True)
out = Console()
MIN_PASSWORD = 12


@admin_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="the sign-in name")],
    role: Annotated[str, typer.Option("--role", help="admin (may change things) or viewer (read-only)")] = "viewer",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="AI_ASSISTANT_DATA_DIR", help="where console.sqlite3 is kept")
    ] = Path("data"),
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from the first line of stdin (scripts)")
    ] = False,
) -> None:
    """Create a console account, or reset its role and password (its sessions end)."""
    if role not in ROLES:
        raise typer.BadParameter(f"must be one of {', '.join(ROLES)}", param_hint="--role")
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise typer.BadParameter("1 to 64 characters without spaces", param_hint="NAME")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise typer.BadParameter("the two passwords differ", param_hint="password")
    if len(password) < MIN_PASSWORD:
        raise typer.BadParameter(f"at least {MIN_PASSWORD} characters", param_hint="password")
    store = ConsoleStore.in_data_dir(data_dir)
    try:
        existed = store.set_user(name, role_of(role), password)
        store.audit(f"cli:{getpass.getuser()}", "user.update" if existed else "user.create", name, after={"role": role})
    finally:
        store.close()
    out.print(f"{'updated' if existed else 'created'} {role} {name} in {store.path}")


def role_of(value: str) -> Role:
    return "admin" if value == "admin" else "viewer"
