"""`ai-assistant doctor` and `/readyz?verbose`: every check of the running configuration, one line each, with what it
means and what to do (docs/runbooks/doctor.md has a section per check).

It never changes state. SQLite files are opened read-only, and as immutable when no process holds them: a read-only
open of a WAL database otherwise leaves `-wal`/`-shm` files behind, owned by whoever ran the doctor (often root), which
the service's own user could then not open. A missing data directory is reported, not created. Platforms are asked for
an access token or the bot's identity, never sent a message. Whatever goes wrong inside a check becomes that check's
failure with the error's own text; the doctor itself does not raise.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Sequence
from pathlib import Path

from ..connectors.base import Connector
from ..engines.base import engine_settings, engine_tls
from ..errors import ConfigError
from ..settings import EngineSettings, Settings
from .cache import cache_check
from .clock import Clocks, clock_checks
from .config import Configured, config_check, load_configuration, validate
from .engine import engine_check, engine_probe, knowledge_check
from .platforms import connector_check
from .report import RUNBOOK, SECTIONS, Check, Report, Status, one_line, render
from .state import disk_check, model_dir, queue_check, state_store
from .tls import tls_endpoint_check, tls_file_check, tls_targets


async def _guard(name: str, check: Awaitable[Check]) -> Check:
    try:
        return await check
    except Exception as exc:  # a check that breaks is a failed check, never a traceback
        return Check(name, Status.FAIL, f"check failed: {one_line(exc)}", "see the runbook", "")


async def run_checks(
    config: Check,
    settings: Settings | None,
    connectors: dict[str, Connector] | None,
    *,
    data_dir: Path,
    tls_files: Sequence[Path] = (),
) -> Report:
    clocks = Clocks()
    data_dir = settings.data_dir if settings is not None else data_dir
    not_loaded = "not checked: the configuration did not load"

    async def store_and_queue() -> tuple[Check, Check]:
        try:
            store, queue = await state_store(settings, data_dir)
        except Exception as exc:
            store, queue = Check("state store", Status.FAIL, one_line(exc), "see the runbook", "state-store"), None
        return store, queue_check(queue)

    # The engine as the service builds it: engine.ca_file resolved against the config dir, its CA loaded.
    engine_conf: EngineSettings | None = None
    engine_context: ssl.SSLContext | None = None
    unusable: Check | None = None
    if settings is not None:
        try:
            engine_conf = engine_settings(settings)
            engine_context = engine_tls(engine_conf)
        except ConfigError as exc:
            unusable = Check("engine", Status.FAIL, one_line(exc), "fix the file and key named", "engine")

    async def engine_and_probe() -> tuple[Check, Check]:
        if engine_conf is None:
            reach = unusable or Check("engine", Status.SKIP, not_loaded)
        else:
            reach = await _guard("engine", engine_check(engine_conf, clocks))
        if engine_conf is None or reach.status is not Status.PASS:
            why = not_loaded if settings is None else "not run: the engine check did not pass"
            return reach, Check("engine probe", Status.SKIP, why)
        return reach, await _guard("engine probe", engine_probe(engine_conf))

    async def skipped(name: str, why: str) -> Check:
        return Check(name, Status.SKIP, why)

    knowledge = (
        _guard("knowledge store", knowledge_check(settings, clocks))
        if settings
        else skipped("knowledge store", not_loaded)
    )
    cache = _guard("answer cache", cache_check(settings, data_dir)) if settings else skipped("answer cache", not_loaded)
    if connectors is not None:
        connector_checks = [_guard(f"connector {n}", connector_check(c, clocks)) for n, c in connectors.items()]
    else:
        connector_checks = [skipped("connectors", not_loaded)]
    tls = [
        _guard(f"tls {host}:{port}", tls_endpoint_check(host, port, label, context))
        for (host, port), (label, context) in (
            tls_targets(settings, (connectors or {}).values(), engine_context).items() if settings is not None else []
        )
    ]
    pairs, rest = await asyncio.gather(
        asyncio.gather(store_and_queue(), engine_and_probe()), asyncio.gather(knowledge, cache, *connector_checks, *tls)
    )
    (store, queue), (engine, probe) = pairs
    checks: list[Check] = [config, store, queue, engine, probe, *rest]
    checks += [tls_file_check(p) for p in tls_files]
    if not tls and not tls_files:
        checks.append(Check("tls", Status.SKIP, "no https URL configured and no --tls-cert given"))
    checks += clock_checks(clocks, connectors or {})
    checks.append(disk_check("disk (state)", data_dir))
    models = model_dir(settings) if settings is not None else None
    if models is not None:
        checks.append(disk_check("disk (models)", models))
    return Report(checks)


async def diagnose(config_dir: Path, data_dir: Path, tls_files: Sequence[Path] = ()) -> Report:
    """`ai-assistant doctor`: load the configuration from disk, then check everything it names."""
    config, settings, configured = load_configuration(config_dir, data_dir)
    connectors = configured.connectors if configured is not None else None
    try:
        return await run_checks(config, settings, connectors, data_dir=data_dir, tls_files=tls_files)
    finally:
        for connector in (connectors or {}).values():
            await connector.aclose()


async def diagnose_running(settings: Settings, connectors: dict[str, Connector], problems: list[str]) -> Report:
    """`/readyz?verbose`: the same checks against the configuration the service started with."""
    config = config_check(Configured(settings, connectors, problems), prefix="loaded at start: ")
    return await run_checks(config, settings, connectors, data_dir=settings.data_dir)


__all__ = [
    "RUNBOOK",
    "SECTIONS",
    "Check",
    "Report",
    "Status",
    "diagnose",
    "diagnose_running",
    "load_configuration",
    "render",
    "run_checks",
    "tls_endpoint_check",
    "tls_file_check",
    "validate",
]
