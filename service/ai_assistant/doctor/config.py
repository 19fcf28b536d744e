"""The `config` check: everything the service refuses at start, without opening anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..connectors.base import Connector
from ..engines.base import engine_settings
from ..errors import AssistantError, ConfigError
from ..settings import Settings
from .report import Check, Status, one_line


@dataclass(frozen=True)
class Configured:
    settings: Settings
    connectors: dict[str, Connector]
    problems: list[str]  # plugins that did not load: the service starts without them


def validate(settings: Settings) -> Configured:
    """Everything `app.build_parts` refuses, without what it opens: no state store, no knowledge base, no engine
    connection. `check-config` and the doctor share it, so neither creates the data directory or the SQLite file."""
    from ..channels.loader import load_channels
    from ..connectors.loader import load_connectors
    from ..pipeline.answer_cache import check_connectors
    from ..pipeline.filters import SensitiveWordFilter
    from ..plugins.loader import registry_with_plugins
    from ..registry import Kind

    registry = registry_with_plugins(settings.config_dir, settings.data_dir)
    connectors = load_connectors(settings, registry)
    try:
        registry.get(Kind.ENGINE, settings.engine.name)
    except LookupError as exc:
        raise ConfigError("assistant.yaml", "engine.name", str(exc)) from None
    engine_settings(settings)  # engine.ca_file: with an https:// URL, and a readable PEM CA
    words = settings.resolve(settings.filters.words_file) if settings.filters.words_file else None
    SensitiveWordFilter.from_file(words, settings.filters.action)
    load_channels(settings.config_dir, registry, connectors)
    check_connectors(settings.answer_cache, list(connectors))
    from ..workflows.loader import load_workflows

    load_workflows(settings.config_dir)
    if settings.store.backend == "redis" and settings.store.redis_url is None:
        raise ConfigError("assistant.yaml", "store.redis_url", "required when store.backend is redis")
    if settings.knowledge.enabled:
        # Names only: building the knowledge base would load the embedding model and create its store.
        from ..knowledge import embedders, stores
        from ..knowledge.retrieval import _factory

        _factory("embedder", settings.knowledge.embedder.name, embedders.BUILTIN)
        _factory("store", settings.knowledge.store.name, stores.BUILTIN)
    return Configured(settings, connectors, list(registry.problems))


def config_check(configured: Configured, prefix: str = "") -> Check:
    names = ", ".join(configured.connectors) or "none"
    summary = f"{prefix}{len(configured.connectors)} connector(s): {names}"
    if configured.problems:
        return Check(
            "config",
            Status.WARN,
            f"{summary}; plugin problems: {'; '.join(configured.problems)}",
            "the service starts without these plugins: fix or remove them (ai-assistant plugin list)",
            "config",
        )
    return Check("config", Status.PASS, summary)


def load_configuration(config_dir: Path, data_dir: Path) -> tuple[Check, Settings | None, Configured | None]:
    """The config check, plus whatever loaded: settings without connectors still allow the engine and store checks."""
    from ..localsecrets import load_local_secrets
    from ..settings import load_settings

    advice = "fix the file and key named; `ai-assistant check-config` repeats this check alone"
    try:
        load_local_secrets(data_dir)
        settings = load_settings(config_dir, data_dir)
    except (AssistantError, OSError, UnicodeDecodeError) as exc:
        return Check("config", Status.FAIL, one_line(exc), advice, "config"), None, None
    try:
        configured = validate(settings)
    except (AssistantError, OSError, UnicodeDecodeError) as exc:
        return Check("config", Status.FAIL, one_line(exc), advice, "config"), settings, None
    return config_check(configured), settings, configured
