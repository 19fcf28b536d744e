"""The connectors page's "test" button: the credentials of one connector as saved in connectors.yaml, checked against
its platform by the doctor's probe (doctor/platforms.py: a token fetch or the platform's who-am-I call; no message is
sent). The probe runs on a connector built from the file, not the running one, so a connector saved a minute ago can
be tested before the restart that applies it, and the running connector's token cache and rate limits stay untouched."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from ..connectors.base import Connector, ConnectorConfig
from ..doctor.clock import Clocks
from ..doctor.platforms import connector_check
from ..doctor.report import Check, Status
from ..errors import ConfigError
from ..localsecrets import read_env_file
from ..registry import Kind
from ..settings import expand_env
from .connectors_file import route
from .web import PREFIX, Console

_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def build_connector(console: Console, name: str, entry: dict[str, Any]) -> Connector | str:
    """The connector as the next start would build it, or why it cannot be built (one line naming the key)."""
    files = console.deps.connectors_file
    platform = str(entry.get("platform"))
    try:
        cls = files.registry.get(Kind.CONNECTOR, platform)
    except LookupError as exc:
        return f"{name}.platform: {exc}"
    # Secrets the console saved since the start are in secrets.env, not yet in this process's environment.
    saved = read_env_file(console.data_dir / "secrets.env")
    resolved = {}
    for key, value in entry.items():
        found = _REF.match(value) if isinstance(value, str) else None
        resolved[key] = saved[found.group(1)] if found and found.group(1) in saved else value
    model: type[ConnectorConfig] = getattr(cls, "Config", ConnectorConfig)
    try:
        config = model.model_validate(expand_env(resolved, str(files.path), name))
    except ConfigError as exc:
        return f"{exc.key}: {exc.problem}"
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"{name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    connector: Connector = cls(name, config)
    return connector


def router(console: Console) -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    files = console.deps.connectors_file

    @r.post("/connectors/{name}/test")
    async def test(request: Request, name: str) -> Response:
        gate = await console.change(request)  # admins only: it uses the secrets and calls out of the network
        if isinstance(gate, Response):
            return gate
        user, _ = gate
        entry = files.enabled().get(name) or files.disabled().get(name)
        if entry is None:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        built = build_connector(console, name, entry)
        if isinstance(built, str):
            check = Check(f"connector {name}", Status.FAIL, built, "fix the connector's settings and save it again")
        else:
            try:
                check = await connector_check(built, Clocks())
            finally:
                await built.aclose()
        console.accounts.audit(user.name, "connector.test", name, None, {"status": check.status.value})
        return console.render(
            request, "connector_test.html", 200 if check.status is not Status.FAIL else 502, user=user,
            name=name, platform=entry.get("platform"), check=check, callback=entry.get("webhook_url"),
            webhook_path=route(entry.get("webhook_url")), passed=check.status is Status.PASS,
        )  # fmt: skip

    return r
