"""TLS certificates: of every https URL the configuration names, and of files given with --tls-cert."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..connectors.base import Connector
from ..settings import Settings
from .clock import HTTP_TIMEOUT
from .report import Check, Status, one_line

CERT_WARN_DAYS = 14.0  # TLSCertificateExpiring, warning
CERT_FAIL_DAYS = 3.0  # TLSCertificateExpiring, critical


_DEFAULT_BASES = {"telegram": "https://api.telegram.org"}


def tls_targets(
    settings: Settings, connectors: Iterable[Connector], engine_context: ssl.SSLContext | None = None
) -> dict[tuple[str, int], tuple[str, ssl.SSLContext | None]]:
    """Every https endpoint the configuration names -> (what it is, the context it is verified with: the engine's CA
    for the engine, None for the default trust store)."""
    urls: list[tuple[str, str | None, ssl.SSLContext | None]] = [("engine", settings.engine.base_url, engine_context)]
    for c in connectors:
        url = getattr(c, "api_base", None) or c.config.api_base or _DEFAULT_BASES.get(c.platform)
        urls.append((f"connector {c.name}", url or getattr(c.config, "reply_url", None), None))
    if settings.knowledge.enabled:
        urls += [("knowledge", settings.knowledge.store.url, None), ("embedder", settings.knowledge.embedder.url, None)]
    targets: dict[tuple[str, int], tuple[str, ssl.SSLContext | None]] = {}
    for label, url, context in urls:
        parts = urlsplit(url or "")
        if parts.scheme == "https" and parts.hostname:
            targets.setdefault((parts.hostname, parts.port or 443), (label, context))
    return targets


def _expiry_check(name: str, what: str, not_before: float, not_after: float) -> Check:
    now = time.time()
    days = (not_after - now) / 86400
    until = datetime.fromtimestamp(not_after, tz=UTC).strftime("%Y-%m-%d")
    details = {"days_left": round(days, 1), "not_after": until}
    renew = "renew it (roles/tls renews Let's Encrypt certificates; check its timer)"
    if not_before > now:
        return Check(name, Status.FAIL, f"{what} is not valid before {not_before:.0f}", renew, "tls", details)
    if days < 0:
        return Check(name, Status.FAIL, f"{what} expired {-days:.0f} day(s) ago ({until})", renew, "tls", details)
    if days < CERT_FAIL_DAYS:
        return Check(name, Status.FAIL, f"{what} expires in {days:.1f} day(s) ({until})", renew, "tls", details)
    if days < CERT_WARN_DAYS:
        return Check(name, Status.WARN, f"{what} expires in {days:.0f} day(s) ({until})", renew, "tls", details)
    return Check(name, Status.PASS, f"{what} valid for {days:.0f} more day(s) ({until})", details=details)


async def tls_endpoint_check(host: str, port: int, label: str, context: ssl.SSLContext | None = None) -> Check:
    """The certificate's days left; `context` verifies it. By default as the clients that call these endpoints do:
    httpx's trust store (certifi's bundle), not the system's, so the doctor cannot pass what a connector refuses."""
    name = f"tls {host}:{port}"
    context = context or httpx.create_ssl_context()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), HTTP_TIMEOUT.read
        )
    except ssl.SSLCertVerificationError as exc:
        advice = "the certificate is not trusted here (expired, wrong name, unknown CA)"
        return Check(name, Status.FAIL, f"{label}: {exc.verify_message or exc}", advice, "tls")
    except (OSError, TimeoutError) as exc:
        return Check(name, Status.FAIL, f"{label}: cannot connect ({one_line(exc)})", "network path", "tls")
    cert = writer.get_extra_info("peercert") or {}
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 5)
    not_before = ssl.cert_time_to_seconds(cert["notBefore"]) if "notBefore" in cert else 0.0
    return _expiry_check(name, f"{label}'s certificate", not_before, ssl.cert_time_to_seconds(cert["notAfter"]))


def tls_file_check(path: Path) -> Check:
    """A PEM certificate on disk (e.g. the one nginx serves); the first certificate of a chain is the server's."""
    from cryptography import x509

    name = f"tls {path}"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Check(name, Status.FAIL, f"cannot read a PEM certificate: {one_line(exc)}", "check the path", "tls")
    return _expiry_check(
        name, "certificate", cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    )
