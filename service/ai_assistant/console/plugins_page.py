"""Plugins: what is installed under <data_dir>/plugins with its verified status (plugins/manager.py, as `ai-assistant
plugin list`), the trusted keys, and enable/disable. A change applies at the next restart: a plugin's code is imported
when the service starts, and Python cannot unload imported code safely, so the page says so instead of pretending."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..plugins.errors import PluginError
from ..plugins.manager import Checked, PluginManager
from .store import User
from .web import PREFIX, Console


def _row(checked: Checked) -> dict[str, object]:
    r = checked.record
    return {
        "name": r.name,
        "type": r.type,
        "version": r.version,
        "signer": r.signer,
        "source": r.source,
        "permissions": ", ".join(r.permissions),
        "enabled": r.enabled,
        "status": checked.status,
        "detail": checked.detail,
        "installed_at": datetime.fromtimestamp(r.installed_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    manager: PluginManager | None = console.deps.plugins

    async def page(request: Request, user: User, status: int = 200, **extra: object) -> Response:
        rows: list[dict[str, object]] = []
        keys: list[dict[str, str]] = []
        problem = extra.pop("problem", None)
        if manager is not None:
            try:
                rows = [_row(c) for c in await anyio.to_thread.run_sync(manager.check_all)]
            except PluginError as exc:  # state.json unreadable: say which file and why, change nothing
                problem, status = str(exc), 500 if status == 200 else status
            keys = [{"name": k.name, "key_id": k.key_id} for k in manager.settings.trusted_keys]
        return console.render(
            request, "plugins.html", status, user=user, rows=rows, keys=keys, problem=problem,
            require_signature=manager.settings.require_signature if manager else True, available=manager is not None,
            running=console.deps.running_plugins, **extra,
        )  # fmt: skip

    @r.get("/plugins")
    async def plugins(request: Request, saved: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        return await page(request, user, saved=saved is not None)

    async def switch(request: Request, name: str, enabled: bool) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, _ = gate
        if manager is None:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        before = next(
            (c.record for c in await anyio.to_thread.run_sync(manager.check_all) if c.record.name == name), None
        )
        if before is None:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        try:
            await anyio.to_thread.run_sync(manager.set_enabled, name, enabled)
        except (PluginError, OSError) as exc:  # e.g. the plugins directory is read-only: nothing was written
            return await page(request, user, 409, problem=f"{name}: {exc}")
        action = "enable" if enabled else "disable"
        console.accounts.audit(user.name, f"plugin.{action}", name, {"enabled": before.enabled}, {"enabled": enabled})
        return RedirectResponse(f"{PREFIX}/plugins?saved=1", status_code=303)

    @r.post("/plugins/{name}/enable")
    async def enable(request: Request, name: str) -> Response:
        return await switch(request, name, True)

    @r.post("/plugins/{name}/disable")
    async def disable(request: Request, name: str) -> Response:
        return await switch(request, name, False)

    return r
