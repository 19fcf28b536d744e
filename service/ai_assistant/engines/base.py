"""The engine contract."""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..messages import ChatTurn
from ..settings import ASSISTANT_FILE, EngineSettings, Settings
from ..trust import ca_context, untrusted

CA_KEY = "engine.ca_file"


@runtime_checkable
class Engine(Protocol):
    name: str

    async def chat(self, turns: list[ChatTurn]) -> str:
        """The assistant's answer. Raises EngineUnavailable once bounded retries are exhausted."""

    # Optional: `streams = True` and `chat(turns, on_text=...)`, which awaits on_text with the whole answer so far
    # as it is generated (progressive replies, pipeline/progressive.py); on_text must not raise.
    # Optional: `async def count_tokens(self, texts: list[str]) -> list[int]` with the server's own tokenizer; the
    # pipeline falls back to `estimate_tokens` without it.

    async def ready(self) -> bool:
        """Whether the backing server answers (for /readyz)."""

    async def aclose(self) -> None: ...


OnText = Callable[[str], Awaitable[None]]

_WIDE = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate for engines whose server cannot count (`count_tokens` is optional): about three
    characters per token for Latin text and two tokens per CJK character, which small models' tokenizers split
    finely."""
    wide = len(_WIDE.findall(text))
    return 2 * wide + (len(text) - wide + 2) // 3


def engine_settings(settings: Settings) -> EngineSettings:
    """`settings.engine` as an engine is built with: `ca_file` resolved against the config dir and checked
    (`engine_tls`). The service's start, `check-config` and the doctor all go through here, so a bad CA file is the
    same one-line ConfigError in each."""
    engine = settings.engine
    if engine.ca_file is not None:
        engine = engine.model_copy(update={"ca_file": settings.resolve(engine.ca_file)})
    engine_tls(engine)
    return engine


def engine_tls(engine: EngineSettings) -> ssl.SSLContext | None:
    """The context that verifies an https `base_url` against `ca_file`; None without one (the HTTP library's own,
    which verifies against certifi's bundle). A CA file with a plain http:// URL is refused: it would suggest an
    encryption that is not there."""
    if engine.ca_file is None:
        return None
    scheme = urlsplit(engine.base_url).scheme
    if scheme != "https":
        raise ConfigError(ASSISTANT_FILE, CA_KEY, f"set, but engine.base_url is {scheme}://, not https://")
    return ca_context(engine.ca_file, CA_KEY)


def tls_problem(exc: BaseException, engine: EngineSettings) -> str | None:
    """One line when `exc` is the model server's certificate being refused: a configuration problem, which retrying
    will not fix. None for anything else."""
    why = untrusted(exc, engine.ca_file)
    return None if why is None else f"engine.base_url {engine.base_url}: {why}; set {CA_KEY}"
