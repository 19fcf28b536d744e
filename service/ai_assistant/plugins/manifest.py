"""The plugin manifest: `plugin.toml` at the root of every plugin archive.

```toml
name = "im-connector"                 # lower case, digits, - and _
type = "connector"                    # connector | input_adapter | engine | channel | embedder | vector_store
version = "1.2.0"                     # PEP 440
entry_point = "im_connector:SimpleIMConnector"
requires_assistant = ">=0.1,<1"       # PEP 440 specifier the running assistant must satisfy
permissions = ["network", "secrets"]  # what the plugin says it needs; shown to whoever installs it
description = "..."
commands = [{ name = "weather", description = "today's weather for a city" }]  # optional: listed by /help
```
"""

from __future__ import annotations

import re
import tomllib
from typing import Annotated, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from ..registry import Kind
from ..settings import validation_problem
from .errors import PluginError

MANIFEST_FILE = "plugin.toml"
SIGNATURE_FILE = "plugin.sig"

# The seed's `--type connector` names the kind in the singular; the registry's Kind values are plural.
PLUGIN_TYPES: dict[str, Kind] = {
    "connector": Kind.CONNECTOR,
    "input_adapter": Kind.INPUT_ADAPTER,
    "engine": Kind.ENGINE,
    "channel": Kind.CHANNEL,
    "embedder": Kind.EMBEDDER,
    "vector_store": Kind.VECTOR_STORE,
}
PluginType = Literal["connector", "input_adapter", "engine", "channel", "embedder", "vector_store"]

# What a plugin may declare. The assistant cannot sandbox Python code, so these are a statement the installer reads
# and an auditor can check against the code, not an enforcement boundary (docs/plugins.md, trust model).
Permission = Literal["network", "secrets", "filesystem", "subprocess", "messages"]

NAME_PATTERN = r"^[a-z][a-z0-9_-]{1,63}$"
PluginName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$")


class CommandDeclaration(BaseModel):
    """A chat command the plugin handles (`/name ...`): /help lists it, and the pipeline passes such a message on
    instead of answering "unknown command" (pipeline/commands.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    description: str = Field("", max_length=200)


class PluginManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PluginName
    type: PluginType
    version: str
    entry_point: str = Field(description="module:attribute, importable from the plugin's root directory")
    requires_assistant: str = Field(description="PEP 440 specifier, e.g. '>=0.1,<1'")
    permissions: list[Permission] = Field(default_factory=list)
    description: str = Field("", max_length=500)
    commands: list[CommandDeclaration] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        try:
            Version(v)
        except InvalidVersion:
            raise ValueError(f"{v!r} is not a PEP 440 version") from None
        return v

    @field_validator("entry_point")
    @classmethod
    def _entry(cls, v: str) -> str:
        if not _ENTRY.match(v):
            raise ValueError(f"{v!r} is not of the form module.path:attribute")
        return v

    @field_validator("requires_assistant")
    @classmethod
    def _spec(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier:
            raise ValueError(f"{v!r} is not a PEP 440 version specifier") from None
        return v

    @property
    def kind(self) -> Kind:
        return PLUGIN_TYPES[self.type]

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)

    @property
    def module(self) -> str:
        return self.entry_point.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.entry_point.partition(":")[2]

    def supports(self, assistant_version: str) -> bool:
        return SpecifierSet(self.requires_assistant).contains(Version(assistant_version), prereleases=True)


def parse_manifest(data: bytes, where: str) -> PluginManifest:
    """Read and validate `plugin.toml`; every problem is one line naming the archive and the key."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PluginError(f"{where}: {MANIFEST_FILE} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"{where}: {MANIFEST_FILE} is not valid TOML ({exc})") from None
    try:
        return PluginManifest.model_validate(raw)
    except ValidationError as exc:
        key, msg = validation_problem(exc)
        raise PluginError(f"{where}: {MANIFEST_FILE}: {key or '(top level)'}: {msg}") from None
