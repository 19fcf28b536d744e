"""Servers the assistant verifies against a CA the configuration names instead of the system trust store
(store.redis_ca_file, engine.ca_file): loading that CA, and saying in one line why a server's certificate was refused.
Verification of the chain and the host name is always on; nothing here can turn it off."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

from .errors import ConfigError
from .settings import ASSISTANT_FILE


@functools.cache
def ca_context(ca_file: Path, key: str) -> ssl.SSLContext:
    """A client context that trusts only the PEM certificates in ``ca_file`` (``key`` names it in errors). One per
    file per process: a context is shared by every client that verifies against that CA, and a replaced file is read
    at the next restart (the roles restart the service when they write one)."""
    if not ca_file.is_file():
        raise ConfigError(ASSISTANT_FILE, key, f"{ca_file}: no such file")
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError:  # NO_CERTIFICATE_OR_CRL_FOUND, or PEM that does not parse
        raise ConfigError(ASSISTANT_FILE, key, f"{ca_file}: holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(ASSISTANT_FILE, key, f"{ca_file}: cannot be read ({exc.strerror})") from None
    # Explicit, so that neither a library default nor a later change here can turn verification off.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def refused_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The refused server certificate anywhere in ``exc``'s cause chain (HTTP and Redis clients wrap it)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.append(current)
        current = current.__cause__ or current.__context__
    return None


def untrusted(exc: BaseException, ca_file: Path | None) -> str | None:
    """ "the server's TLS certificate is not trusted by ... (why)" when ``exc`` is a refused certificate (a wrong CA,
    an expired certificate, a host name that is not on it): a configuration problem that retrying will not fix. None
    for anything else."""
    refused = refused_certificate(exc)
    if refused is None:
        return None
    # Not "the system's": HTTP clients (httpx) verify against certifi's bundle, Redis against the system's.
    trust = f"the CA in {ca_file}" if ca_file is not None else "the default trust store"
    reason = refused.verify_message or refused.reason or "verification failed"
    return f"the server's TLS certificate is not trusted by {trust} ({reason})"
