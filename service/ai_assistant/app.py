"""The FastAPI factory. `create_app` builds every part from settings (so configuration errors surface before serving);
the lifespan starts the workers and closes what was opened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from . import __version__, observability
from .alerting import alert_router
from .channels.loader import load_channels
from .channels.notify import Notifier
from .channels.reply import ReplyChannel
from .connectors.base import Connector
from .connectors.loader import load_connectors
from .credentials import BearerTokens
from .dlq import dlq_router
from .edge import Admission, AssistantApp, WebhookEndpoint
from .engines.base import engine_settings
from .knowledge.api import kb_router
from .knowledge.grounding import ground
from .knowledge.retrieval import KnowledgeBase
from .localsecrets import load_local_secrets
from .messages import Feedback, InboundMessage
from .observability import FEEDBACK, register_secrets
from .pipeline.adapters import InputAdapter
from .pipeline.answer_cache import AnswerCache
from .pipeline.commands import Commands, plugin_commands
from .pipeline.filters import SensitiveWordFilter
from .pipeline.supervisor import Workers
from .pipeline.worker import Grounding, Pipeline, export_queue_stats
from .plugins.loader import registry_with_plugins
from .registry import Kind, Registry
from .settings import Settings, load_settings, secret_values
from .store import StateStore, open_store
from .workflows.api import workflows_router
from .workflows.loader import load_workflows
from .workflows.nodes import Services
from .workflows.runner import WorkflowRunner
from .workflows.schema import secret_names

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What the app is made of; tests and the CLI reach the parts through `app.state.parts`."""

    settings: Settings
    registry: Registry
    store: StateStore
    connectors: dict[str, Connector]
    engine: Any
    pipeline: Pipeline
    notifier: Notifier
    knowledge: KnowledgeBase | None
    admin_tokens: BearerTokens
    alert_tokens: BearerTokens
    workers: Workers
    admission: Admission  # quotas and the queue bound in front of every enqueue (edge.py)


def build_parts(settings: Settings, registry: Registry | None = None) -> Parts:
    registry = registry or registry_with_plugins(settings.config_dir, settings.data_dir)
    connectors = load_connectors(settings, registry)
    register_secrets(secret_values(settings))
    observability.create_series(list(connectors), settings.engine.name)
    for connector in connectors.values():
        register_secrets(connector.secrets())
    try:
        engine_factory = registry.get(Kind.ENGINE, settings.engine.name)
    except LookupError as exc:
        from .errors import ConfigError

        raise ConfigError("assistant.yaml", "engine.name", str(exc)) from None
    engine = engine_factory(engine_settings(settings))  # engine.ca_file resolved and checked
    words = settings.resolve(settings.filters.words_file) if settings.filters.words_file else None
    word_filter = SensitiveWordFilter.from_file(words, settings.filters.action)
    adapters: dict[str, InputAdapter] = {}
    for name in registry.names(Kind.INPUT_ADAPTER):
        adapter = registry.get(Kind.INPUT_ADAPTER, name)()
        for kind in adapter.kinds:
            adapters[kind] = adapter
    routed = load_channels(settings.config_dir, registry, connectors)
    for route in routed:
        config = getattr(route.channel, "config", None)
        if isinstance(config, BaseModel):
            register_secrets(secret_values(config))
    store = open_store(settings)
    knowledge = (
        KnowledgeBase.from_settings(settings.knowledge, settings.data_dir) if settings.knowledge.enabled else None
    )
    retriever = _retriever(settings, knowledge) if knowledge is not None else None
    workflows = _workflows(settings, store, engine, retriever, ReplyChannel(connectors), word_filter, adapters)
    pipeline = Pipeline(
        settings=settings,
        store=store,
        engine=engine,
        connectors=connectors,
        channel=ReplyChannel(connectors),
        input_filter=word_filter,
        output_filter=word_filter,
        adapters=adapters,
        retriever=retriever,
        routed=routed,
        answer_cache=AnswerCache.from_settings(
            settings, store, list(connectors), knowledge.version if knowledge is not None else None
        ),
        workflows=workflows,
        commands=Commands(plugin_commands(settings.config_dir, settings.data_dir)),
    )
    return Parts(
        settings,
        registry,
        store,
        connectors,
        engine,
        pipeline,
        Notifier(connectors, store),
        knowledge,
        BearerTokens(settings.admin.token, settings.admin.previous_token),
        BearerTokens(settings.alerts.token, settings.alerts.previous_token),
        Workers(pipeline, settings.worker, settings.lanes),
        Admission(store, settings.queue, settings.quotas, settings.store.dedupe_ttl_seconds, settings.lanes),
    )


async def reload_secrets(parts: Parts) -> None:
    """SIGHUP: re-read the secrets file and take the new internal tokens and Redis URL without a restart, so a
    rotation (ai-assistant rotate-secrets) never fails a request."""
    settings = parts.settings
    load_local_secrets(settings.data_dir, override=True)
    fresh = load_settings(settings.config_dir, settings.data_dir)
    register_secrets(secret_values(fresh))
    parts.admin_tokens.update(fresh.admin.token, fresh.admin.previous_token)
    parts.alert_tokens.update(fresh.alerts.token, fresh.alerts.previous_token)
    reconnect = getattr(parts.store, "reconnect", None)
    if reconnect is not None and fresh.store.redis_url is not None:
        await reconnect(fresh.store.redis_url.get_secret_value())
    log.info("secrets reloaded")


def _workflows(
    settings: Settings,
    store: StateStore,
    engine: Any,
    retriever: Any,
    channel: ReplyChannel,
    word_filter: SensitiveWordFilter,
    adapters: dict[str, InputAdapter],
) -> WorkflowRunner | None:
    """config/workflows/*.yaml, refused here (before serving) with file and node named; none: today's answers."""
    import os

    flows = load_workflows(settings.config_dir)
    if not flows:
        return None
    register_secrets([os.environ[name] for flow in flows for name in secret_names(flow) if name in os.environ])
    log.info("workflows loaded: %s", ", ".join(f"{f.id} v{f.version}" for f in flows))
    services = Services(engine=engine, retriever=retriever, channel=channel)
    block = settings.filters.block_message
    return WorkflowRunner(flows, store, services, word_filter, word_filter, block, adapters)


def _retriever(settings: Settings, kb: KnowledgeBase) -> Any:
    """Knowledge retrieval for the pipeline: grounded prompt + sources, or an honest "nothing found"."""

    async def retrieve(message: InboundMessage, text: str) -> Grounding:
        if not settings.knowledge.retrieval_enabled(message.connector, message.chat_id):
            return Grounding()
        if await anyio.to_thread.run_sync(kb.store.count_chunks) == 0:
            return Grounding()  # no documents yet: a general assistant, not "nothing found" to every question
        found = ground(text, await kb.search(text), max_context_chars=settings.knowledge.max_context_chars)
        if not found.found:
            return Grounding(no_hit_answer=found.no_hit_text)
        return Grounding(system=found.instructions, documents=found.blocks, footer=found.sources_footer)

    return retrieve


def create_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    parts = build_parts(settings, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        for connector in parts.connectors.values():
            _wire(parts, connector)
            await connector.start()
        tasks = [asyncio.create_task(export_queue_stats(parts.store, stop), name="queue-stats")]
        tasks += parts.workers.start(stop)
        log.info(
            "assistant %s ready: %d connector(s), %d worker(s)", __version__, len(parts.connectors), len(tasks) - 1
        )
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            live = getattr(app.state, "live_connectors", None)
            if live is not None:
                await live.aclose()  # connectors replaced by console edits, still within their grace time
            for connector in parts.connectors.values():
                await connector.aclose()
            close = getattr(parts.engine, "aclose", None)
            if close is not None:
                await close()
            if parts.knowledge is not None:
                parts.knowledge.close()
            await parts.store.close()
            if console_store is not None:
                console_store.close()

    app = AssistantApp(title="ai-assistant", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.parts = parts

    for connector in parts.connectors.values():
        if connector.path is not None:
            _mount_webhook(app, parts, connector)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(verbose: str | None = None, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        if verbose is not None:
            # `?verbose`: every check of `ai-assistant doctor`, for an operator. Admin-only: /readyz is public behind
            # nginx, and the checks name internal addresses, fetch platform tokens and run a generation.
            from .doctor import diagnose_running

            await admin_dependency(parts.admin_tokens)(authorization)

            report = await diagnose_running(settings, parts.connectors, list(parts.registry.problems))
            return JSONResponse({"ready": report.ok, **report.as_dict()}, status_code=200 if report.ok else 503)
        checks = await readiness(parts)
        ready = all(v in ("ok", "standby") for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    require_admin = admin_dependency(parts.admin_tokens)
    app.include_router(dlq_router(parts.store, require_admin))
    flows = parts.pipeline.workflows.flows if parts.pipeline.workflows is not None else []
    dry = Services(engine=parts.engine, retriever=parts.pipeline.retriever)  # the dry run posts nothing: no channel
    app.include_router(workflows_router(parts.store, flows, require_admin, dry))
    if parts.knowledge is not None:
        app.include_router(kb_router(parts.knowledge, require_admin))
    if settings.alerts.token is not None:
        alerts = alert_router(
            settings.alerts, parts.notifier, connectors=list(parts.connectors), tokens=parts.alert_tokens
        )
        app.include_router(alerts)

    @app.get("/admin/status", dependencies=[Depends(require_admin)], include_in_schema=False)
    async def status() -> dict[str, Any]:
        stats = await parts.store.stats()
        return {
            "version": __version__,
            "queue": {"depth": stats.depth, "oldest_age_seconds": round(stats.oldest_age_seconds, 3)},
            "connectors": sorted(parts.connectors),
            "plugin_problems": list(parts.registry.problems),
        }

    console_store = _mount_console(app, parts) if settings.console.enabled else None

    if settings.server.metrics_port is None:
        app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)

    return app


async def readiness(parts: Parts) -> dict[str, str]:
    """/readyz's checks, also shown on the console's overview."""
    checks: dict[str, str] = {}
    try:
        await parts.store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # any driver error means "not ready", never a 500
        checks["store"] = f"unavailable: {type(exc).__name__}"
    checks["engine"] = "ok" if await parts.engine.ready() else "unavailable"
    if parts.settings.worker.enabled:
        problems = parts.workers.problems()
        checks["workers"] = "; ".join(problems) if problems else "ok"
    for name, connector in parts.connectors.items():
        if connector.link is not None:  # mode: stream; "standby" = another instance holds the connection
            checks[f"stream:{name}"] = connector.link.state
    return checks


def _mount_webhook(app: AssistantApp, parts: Parts, connector: Connector) -> None:
    assert connector.path is not None
    settings = parts.settings
    endpoint = WebhookEndpoint(
        connector,
        parts.store,
        max_body_bytes=settings.server.max_body_bytes,
        dedupe_ttl=settings.store.dedupe_ttl_seconds,
        trusted_proxies=settings.server.trusted_proxies,
        admission=parts.admission,
    )
    # Raw bytes, not FastAPI's parameter parsing, and dispatched ahead of FastAPI's stack (AssistantApp).
    app.add_webhook(connector.path, endpoint, connector.methods)


def _wire(parts: Parts, connector: Connector) -> None:
    """What a connector needs from the service before start(); also for one added by the console while serving."""
    connector.sink = _sink(parts)
    connector.leases = parts.store
    connector.feedback = _feedback(parts, connector.name)


def _sink(parts: Parts) -> Any:
    async def sink(message: Any) -> bool:
        import time

        message.received_at = message.received_at or time.time()
        return await parts.admission.admit(message)

    return sink


def _mount_console(app: AssistantApp, parts: Parts) -> Any:
    from .console.connectors_file import ConnectorsFile
    from .console.live import LiveConnectors
    from .console.web import ConsoleDeps, mount_console
    from .console.words_file import WordsFile
    from .plugins.manager import PluginManager
    from .plugins.settings import load_plugin_settings
    from .workflows.versions import WorkflowFiles

    settings = parts.settings
    pipeline = parts.pipeline

    def apply_words(new: SensitiveWordFilter) -> None:
        # One reference swap: a message being handled keeps the filter it read; the next one reads the new list.
        pipeline.input_filter = pipeline.output_filter = new

    words_file = settings.filters.words_file
    words = WordsFile(settings.resolve(words_file), settings.filters.action, apply_words) if words_file else None
    loaded = {
        e.source.removeprefix("plugin:") for e in parts.registry.entries.values() if e.source.startswith("plugin:")
    }
    # Console connector edits apply to the running service through the same connectors mapping (console/live.py).
    live = LiveConnectors(
        app,
        settings,
        parts.registry,
        parts.connectors,
        mount=lambda c: _mount_webhook(app, parts, c),
        wire=lambda c: _wire(parts, c),
    )
    app.state.live_connectors = live
    deps = ConsoleDeps(
        live_connectors=live,
        store=parts.store,
        readiness=lambda: readiness(parts),
        connectors_file=ConnectorsFile(settings.config_dir, settings.data_dir, parts.registry),
        running_connectors=sorted(parts.connectors),
        trusted_proxies=settings.server.trusted_proxies,
        knowledge=parts.knowledge,
        plugins=PluginManager(settings.data_dir, load_plugin_settings(settings.config_dir)),
        running_plugins=sorted(loaded),
        words=words,
        # The editor's dry run uses the model and knowledge like the admin API's, and posts nothing (no channel).
        workflows=WorkflowFiles(settings.config_dir, Services(engine=parts.engine, retriever=pipeline.retriever)),
    )
    return mount_console(app, settings.console, settings.data_dir, deps)


def _feedback(parts: Parts, connector: str) -> Callable[[Feedback], Awaitable[None]]:
    """Feedback that arrived over a long connection, counted once, as the webhook edge counts it."""

    async def count(feedback: Feedback) -> None:
        if await parts.store.remember(
            f"feedback:{connector}:{feedback.event_id}", parts.settings.store.dedupe_ttl_seconds
        ):
            FEEDBACK.labels(connector=connector, rating=feedback.rating).inc()

    return count


def admin_dependency(tokens: BearerTokens) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency (use with Depends) requiring `Authorization: Bearer <admin.token>`; without a token the
    admin API is off."""

    async def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if not tokens.configured:
            raise HTTPException(status_code=403, detail="admin API disabled: set admin.token")
        if not tokens.check(authorization):
            raise HTTPException(status_code=401, detail="bad or missing admin token")

    return require_admin


async def metrics_endpoint() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def metrics_app() -> FastAPI:
    """The app for the internal metrics port: /metrics only."""
    app = FastAPI(docs_url=None, redoc_url=None)
    app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    return app
