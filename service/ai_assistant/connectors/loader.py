"""Builds the configured connectors from connectors.yaml through the registry, with one-line errors."""

from __future__ import annotations

from pydantic import ValidationError

from ..errors import ConfigError
from ..registry import Kind, Registry
from ..settings import SecretsCheck, Settings, config_error, read_connectors_file
from .base import Connector, ConnectorConfig


def load_connectors(settings: Settings, registry: Registry) -> dict[str, Connector]:
    file, raw = read_connectors_file(settings.config_dir)
    connectors: dict[str, Connector] = {}
    paths: dict[str, str] = {}
    for name, options in raw.items():
        platform = str(options["platform"])
        try:
            cls = registry.get(Kind.CONNECTOR, platform)
        except LookupError as exc:
            raise ConfigError(file, f"{name}.platform", str(exc)) from None
        config_model: type[ConnectorConfig] = getattr(cls, "Config", ConnectorConfig)
        try:
            config = config_model.model_validate(options)
        except ValidationError as exc:
            raise config_error(file, exc, name) from None
        SecretsCheck.check(config, file, name)
        connector: Connector = cls(name, config)
        path = connector.path
        if path is not None:
            if path in paths:
                raise ConfigError(file, f"{name}.webhook_url", f"path {path} is already used by {paths[path]}")
            paths[path] = name
        connectors[name] = connector
    return connectors
