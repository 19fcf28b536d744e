"""Console edits of `connectors.yaml`. The file stays the source of truth: the console validates an entry with the same
model the loader uses, writes the whole file atomically after copying the old one to `<data dir>/console/backups/`,
keeps new secrets in the secrets file as `${ENV}` references (never in the YAML), and parks disabled connectors in
`<data dir>/console/disabled-connectors.yaml` (the loader has no `enabled` key). Nothing here touches the running
connectors: the service builds them at start (docs/console.md)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from ..connectors.base import ConnectorConfig
from ..errors import ConfigError
from ..localsecrets import read_env_file, secrets_path, write_env_file
from ..registry import Kind, Registry
from ..settings import CONNECTORS_FILE, expand_env, is_placeholder

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
REDACTED = "***"


class ConnectorEditError(Exception):
    """Field -> message, shown next to each field; nothing was written."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # text | secret | bool | list | number
    required: bool
    description: str
    default: Any = None


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `| None`, and whether None was allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(typing.get_args(annotation))
    return annotation, False


def form_fields(model: type[ConnectorConfig]) -> list[Field]:
    out: list[Field] = []
    for name, info in model.model_fields.items():
        if name == "platform":
            continue
        inner, _ = _unwrap(info.annotation)
        if typing.get_origin(inner) is dict or (isinstance(inner, type) and issubclass(inner, BaseModel)):
            continue  # nested keys (memory, chats) have no flat form field: edited in the file, kept by build()
        if inner is SecretStr:
            kind = "secret"
        elif inner is bool:
            kind = "bool"
        elif typing.get_origin(inner) is list:
            kind = "list"
        elif inner in (int, float):
            kind = "number"
        else:
            kind = "text"
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append(Field(name, kind, info.is_required(), info.description or "", default))
    # Required keys first: they are what a new connector needs; the optional ones have working defaults.
    return sorted(out, key=lambda f: not f.required)


def form_values(model: type[ConnectorConfig], entry: dict[str, Any]) -> dict[str, Any]:
    """What the form shows: the model's defaults under the entry (a checkbox left out of the file is its default,
    not unchecked), lists joined, secrets redacted."""
    values: dict[str, Any] = {f.name: f.default for f in form_fields(model) if f.default not in (None, [])}
    values.update(redact(entry, model) or {})
    return {k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in values.items()}


def route(url: Any) -> str | None:
    """The local route of a webhook URL, as `Connector.path` computes it (the loader refuses two on one path)."""
    return (urlsplit(url).path or "/") if isinstance(url, str) and url else None


def redact(entry: dict[str, Any] | None, model: type[ConnectorConfig] | None) -> dict[str, Any] | None:
    """An entry for the audit log and the pages: every secret field becomes ***."""
    if entry is None:
        return None
    secret = {f.name for f in form_fields(model) if f.kind == "secret"} if model else set()
    return {k: (REDACTED if k in secret else v) for k, v in entry.items()}


def env_name(connector: str, field: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", f"AI_ASSISTANT_CONSOLE_{connector}_{field}".upper())


class ConnectorsFile:
    def __init__(self, config_dir: Path, data_dir: Path, registry: Registry) -> None:
        self.path = config_dir / CONNECTORS_FILE
        self.disabled_path = data_dir / "console" / "disabled-connectors.yaml"
        self.backups = data_dir / "console" / "backups"
        self.data_dir = data_dir
        self.registry = registry

    # -- reading ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _load(path: Path) -> dict[str, dict[str, Any]]:
        if not path.exists():
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(str(path), "", "must be a mapping at the top level")
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    def enabled(self) -> dict[str, dict[str, Any]]:
        """Raw entries as written (`${ENV}` references not expanded)."""
        return self._load(self.path)

    def disabled(self) -> dict[str, dict[str, Any]]:
        return self._load(self.disabled_path)

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path.exists() else ""

    def writable(self) -> bool:
        """False where the file is managed read-only (the assistant role writes it root-owned, 0640)."""
        return os.access(self.path if self.path.exists() else self.path.parent, os.W_OK)

    def model(self, platform: str) -> type[ConnectorConfig]:
        model: type[ConnectorConfig] = getattr(self.registry.get(Kind.CONNECTOR, platform), "Config", ConnectorConfig)
        return model

    def platforms(self) -> list[str]:
        """The platforms the console offers: every registered connector but those the deploy roles own."""
        return sorted(
            name
            for name in self.registry.names(Kind.CONNECTOR)
            if getattr(self.registry.get(Kind.CONNECTOR, name), "in_console", True)
        )

    def shown(self, entry: dict[str, Any]) -> bool:
        """Whether the console lists and changes this connectors.yaml entry (not one the deploy roles own). An entry
        whose platform is not registered (its plugin is gone) is shown, so that an operator can remove it."""
        platform = entry.get("platform")
        return platform in self.platforms() or platform not in self.registry.names(Kind.CONNECTOR)

    # -- validating -------------------------------------------------------------------------------------------------
    def build(
        self, name: str, platform: str, form: dict[str, str], *, creating: bool
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(raw entry to write, new secrets as env name -> value) from the submitted form, or ConnectorEditError.
        A secret left empty on an edit keeps the current value (secrets are write-only)."""
        errors: dict[str, str] = {}
        enabled, disabled = self.enabled(), self.disabled()
        current = enabled.get(name) or disabled.get(name)
        if creating:
            if not NAME.match(name):
                errors["name"] = "lower-case letters, digits, - and _ (up to 63), starting with a letter or digit"
            elif name in enabled or name in disabled:
                errors["name"] = f"a connector named {name} already exists"
        if platform not in self.platforms():
            raise ConnectorEditError({**errors, "platform": f"unknown platform {platform!r}"})
        model = self.model(platform)
        raw: dict[str, Any] = {"platform": platform}
        new_secrets: dict[str, str] = {}
        for field in form_fields(model):
            value = form.get(field.name, "").strip()
            if field.kind == "bool":
                raw[field.name] = value == "on"
            elif field.kind == "secret":
                if value:
                    if is_placeholder(value):
                        errors[field.name] = "is a placeholder; set a real secret"
                    new_secrets[env_name(name, field.name)] = value
                    raw[field.name] = "${" + env_name(name, field.name) + "}"
                elif current is not None and field.name in current:
                    raw[field.name] = current[field.name]
            elif field.kind == "list":
                items = [v.strip() for v in re.split(r"[,\n]", value) if v.strip()]
                if items:
                    raw[field.name] = items
            elif value:
                raw[field.name] = value
        shown = {f.name for f in form_fields(model)}
        for key, value in (current or {}).items():
            if key != "platform" and key not in shown and key in model.model_fields:
                raw[key] = value
        # Validate what the loader will see: references expanded, the new secrets in place of theirs.
        resolved = {
            k: (new_secrets[v[2:-1]] if isinstance(v, str) and v[2:-1] in new_secrets else v) for k, v in raw.items()
        }
        try:
            resolved = expand_env(resolved, str(self.path), name)
            config = model.model_validate(resolved)
        except ConfigError as exc:
            errors.setdefault(exc.key.split(".")[-1], exc.problem)
            raise ConnectorEditError(errors) from None
        except ValidationError as exc:
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else "platform"
                problem = {"missing": "required"}.get(err["type"], str(err["msg"]).removeprefix("Value error, "))
                errors.setdefault(key, problem)
            raise ConnectorEditError(errors) from None
        path = route(config.webhook_url)
        if path is not None:
            for other, options in enabled.items():
                if other != name and path == route(options.get("webhook_url")):
                    errors["webhook_url"] = f"path {path} is already used by {other}"
        if errors:
            raise ConnectorEditError(errors)
        # Typed values as the model reads them (numbers, booleans), defaults left out to keep the file short.
        clean = config.model_dump(mode="json", exclude_defaults=True)
        secret = {f.name for f in form_fields(model) if f.kind == "secret"}
        entry: dict[str, Any] = {"platform": platform}
        for key, value in raw.items():
            if key != "platform":
                # Secrets and `${ENV}` references as written (the dump would mask them); the rest as the model read it.
                keep = key in secret or (isinstance(value, str) and "${" in value)
                entry[key] = value if keep else clean.get(key, value)
        return entry, new_secrets

    # -- writing ----------------------------------------------------------------------------------------------------
    def save(
        self,
        enabled: dict[str, dict[str, Any]],
        disabled: dict[str, dict[str, Any]] | None = None,
        new_secrets: dict[str, str] | None = None,
    ) -> None:
        """Secrets first (a reference must never point at nothing), then a backup, then the atomic replace."""
        if not enabled:
            raise ConnectorEditError({"name": "the service needs at least one enabled connector"})
        if not self.writable():
            raise ConnectorEditError(
                {"name": f"{self.path} is read-only for the service (managed by Ansible?): change it there"}
            )
        if new_secrets:
            path = secrets_path(self.data_dir)
            values = read_env_file(path)
            values.update(new_secrets)
            write_env_file(path, values)
            os.environ.update(new_secrets)
        if self.path.exists():
            self.backups.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 1_000_000:06d}"
            shutil.copy2(self.path, self.backups / f"connectors.yaml.{stamp}")
        _atomic_yaml(self.path, enabled)
        if disabled is not None:
            self.disabled_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_yaml(self.disabled_path, disabled)


_HEADER = (
    "# Connectors in the seed's shape (docs/connectors.md). Written by the admin console; earlier versions are\n"
    "# kept in <data dir>/console/backups. Secrets are `${NAME}` references to the secrets file, never values.\n"
)


def _atomic_yaml(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_HEADER)
        yaml.safe_dump(data, f, allow_unicode=True, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
