"""Plugin trust settings: `<config_dir>/plugins.yaml`.

A file of its own (not a section of assistant.yaml) so that the trust root can be owned by root and read-only to the
service user, while the rest of the configuration is managed as usual (docs/adr/0081-plugin-archives-and-trust.md).

```yaml
require_signature: true            # the default; false accepts unsigned archives (they are listed as unsigned)
trusted_keys:
  - name: acme-platform-team
    public_key: "ed25519:3q2+7w..."  # as printed by `ai-assistant plugin keygen`
ca_bundle: /etc/ssl/certs/corp-ca.pem  # optional: extra CA for https plugin repositories
```
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError
from ..settings import _read_yaml, config_error

PLUGINS_FILE = "plugins.yaml"
KEY_PREFIX = "ed25519:"


def key_id(raw_public_key: bytes) -> str:
    """A short, computed (never claimed) identifier of a public key."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def decode_public_key(text: str) -> bytes:
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"must start with {KEY_PREFIX!r} (as printed by `ai-assistant plugin keygen`)")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("is not a base64 ed25519 public key of 32 bytes") from None
    return raw


class TrustedKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    public_key: str

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str) -> str:
        decode_public_key(v)
        return v

    @property
    def raw(self) -> bytes:
        return decode_public_key(self.public_key)

    @property
    def key_id(self) -> str:
        return key_id(self.raw)


class PluginSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_signature: bool = True
    trusted_keys: list[TrustedKey] = Field(default_factory=list)
    ca_bundle: Path | None = Field(None, description="PEM bundle of extra CAs trusted for https plugin URLs")
    # Bounds that make a hostile archive cheap to refuse: the download, the unpacked size, the member count and the
    # compression ratio of any member big enough to matter.
    max_archive_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_unpacked_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_files: int = Field(2000, ge=1)
    max_ratio: int = Field(100, ge=2)
    download_timeout_seconds: float = Field(60.0, gt=0)

    def trusted_by_id(self) -> dict[str, TrustedKey]:
        return {k.key_id: k for k in self.trusted_keys}


def load_plugin_settings(config_dir: Path) -> PluginSettings:
    """`<config_dir>/plugins.yaml`, or the defaults (signatures required, no key trusted) when it does not exist."""
    path = config_dir / PLUGINS_FILE
    data = _read_yaml(path)
    try:
        settings = PluginSettings.model_validate(data)
    except ValidationError as exc:
        raise config_error(str(path), exc) from None
    if settings.ca_bundle is not None:
        bundle = settings.ca_bundle if settings.ca_bundle.is_absolute() else config_dir / settings.ca_bundle
        if not bundle.is_file():
            raise ConfigError(str(path), "ca_bundle", f"{bundle} does not exist")
        settings = settings.model_copy(update={"ca_bundle": bundle})
    ids = [k.key_id for k in settings.trusted_keys]
    if len(ids) != len(set(ids)):
        raise ConfigError(str(path), "trusted_keys", "the same public key is listed twice")
    return settings
