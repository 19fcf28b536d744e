"""Ed25519 signatures over a plugin's file listing.

What is signed is a canonical listing of every file in the archive except `plugin.sig` itself: one line
`<sha256 hex> <size> <path>` per file, sorted by path, after a fixed header line. Any added, removed, renamed or altered
file therefore breaks the signature, and the same listing is recomputed from disk each time the plugin is loaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import PluginError
from .settings import KEY_PREFIX, PluginSettings, key_id

SIG_FORMAT = "ai-assistant-plugin-sig/1"
_HEADER = f"{SIG_FORMAT}\n".encode()

# path -> (sha256 hex, size)
Listing = Mapping[str, tuple[str, int]]


def canonical_payload(listing: Listing) -> bytes:
    lines = [f"{digest} {size} {path}\n" for path, (digest, size) in sorted(listing.items())]
    return _HEADER + "".join(lines).encode("utf-8")


def tree_digest(listing: Listing) -> str:
    return hashlib.sha256(canonical_payload(listing)).hexdigest()


@dataclass(frozen=True)
class Signer:
    """Who vouched for a plugin: a trusted key's name and id, or nobody."""

    name: str
    key_id: str | None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.key_id})" if self.key_id else self.name


UNSIGNED = Signer("unsigned", None)


def public_key_text(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def generate_key(path: Path) -> str:
    """Write a new private key (PEM, mode 0600, never overwriting) and return its public key line."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PluginError(f"{path}: already exists; refusing to overwrite a signing key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_key_text(private)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise PluginError(f"{path}: cannot read the signing key ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise PluginError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PluginError(f"{path}: not an ed25519 key (generate one with `ai-assistant plugin keygen`)")
    return key


def sign_listing(listing: Listing, private: Ed25519PrivateKey) -> bytes:
    """The content of `plugin.sig` for this listing."""
    raw_pub = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = private.sign(canonical_payload(listing))
    doc = {
        "format": SIG_FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(raw_pub),
        "signature": base64.b64encode(signature).decode(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def verify_listing(listing: Listing, signature_file: bytes | None, settings: PluginSettings, where: str) -> Signer:
    """Check `plugin.sig` against the trusted keys. Returns the signer, or UNSIGNED when that is allowed."""
    if signature_file is None:
        if settings.require_signature:
            raise PluginError(
                f"{where}: the plugin is not signed and plugins.yaml requires signatures (require_signature: true)"
            )
        return UNSIGNED
    try:
        doc = json.loads(signature_file)
        if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT or doc.get("algorithm") != "ed25519":
            raise ValueError
        kid = str(doc["key_id"])
        signature = base64.b64decode(str(doc["signature"]), validate=True)
    except (ValueError, KeyError, TypeError):
        raise PluginError(f"{where}: plugin.sig is malformed (expected {SIG_FORMAT} JSON)") from None
    trusted = settings.trusted_by_id().get(kid)
    if trusted is None:
        if settings.require_signature:
            raise PluginError(f"{where}: signed by key {kid}, which is not in trusted_keys of plugins.yaml")
        # Not required and not verifiable: treated exactly like an unsigned plugin, and listed as such.
        return UNSIGNED
    try:
        Ed25519PublicKey.from_public_bytes(trusted.raw).verify(signature, canonical_payload(listing))
    except InvalidSignature:
        raise PluginError(
            f"{where}: the signature by {trusted.name} ({kid}) does not match the files: the archive was altered "
            "after it was signed"
        ) from None
    return Signer(trusted.name, kid)
