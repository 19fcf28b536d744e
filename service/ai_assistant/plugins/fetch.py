"""Fetching a plugin archive from an https:// or file:// URL into a local file, bounded in size and time.

Plain http is refused (an archive is code), and so is a redirect to anything but https. TLS is always verified: against
the system's CAs plus `ca_bundle` from plugins.yaml when one is set.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from .errors import PluginError

_MAX_REDIRECTS = 5


def redact(url: str) -> str:
    """The URL without credentials, query or fragment: what may be shown, logged and stored."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def has_secrets(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.username or parts.password or parts.query)


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_bundle is not None:
        ctx.load_verify_locations(cafile=str(ca_bundle))
    return ctx


def fetch(url: str, dest: Path, *, max_bytes: int, ca_bundle: Path | None, timeout: float) -> None:
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PluginError(f"{shown}: file URLs must name a local path (file:///path/to/plugin.zip)")
        _copy_file(Path(unquote(parts.path)), dest, max_bytes, shown)
    elif parts.scheme == "https":
        _download(url, dest, max_bytes, _ssl_context(ca_bundle), timeout, shown)
    elif parts.scheme == "http":
        raise PluginError(f"{shown}: plain http is refused for plugins; use https:// or file://")
    else:
        raise PluginError(f"{shown}: unsupported URL scheme {parts.scheme!r}; use https:// or file://")


def _copy_file(src: Path, dest: Path, max_bytes: int, shown: str) -> None:
    try:
        with src.open("rb") as fh, dest.open("wb") as out:
            copied = 0
            while chunk := fh.read(64 * 1024):
                copied += len(chunk)
                if copied > max_bytes:
                    raise PluginError(f"{shown}: larger than max_archive_bytes ({max_bytes} bytes)")
                out.write(chunk)
    except IsADirectoryError:
        raise PluginError(f"{shown}: is a directory, not a plugin archive") from None
    except FileNotFoundError:
        raise PluginError(f"{shown}: file not found") from None
    except PermissionError:
        raise PluginError(f"{shown}: permission denied") from None


def _download(url: str, dest: Path, max_bytes: int, ctx: ssl.SSLContext, timeout: float, shown: str) -> None:
    with httpx.Client(verify=ctx, timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                with client.stream("GET", url) as resp:
                    if resp.is_redirect:
                        url = str(resp.url.join(resp.headers.get("location", "")))
                        if urlsplit(url).scheme != "https":
                            raise PluginError(f"{shown}: redirected to a non-https URL; refused")
                        continue
                    if resp.status_code != 200:
                        raise PluginError(f"{shown}: download failed with HTTP {resp.status_code}")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise PluginError(f"{shown}: larger than max_archive_bytes ({max_bytes} bytes)")
                    received = 0
                    with dest.open("wb") as out:
                        for chunk in resp.iter_bytes():
                            received += len(chunk)
                            if received > max_bytes:
                                raise PluginError(f"{shown}: larger than max_archive_bytes ({max_bytes} bytes)")
                            out.write(chunk)
                    return
            except httpx.ConnectError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise PluginError(
                        f"{shown}: TLS certificate not trusted (add the issuing CA as ca_bundle in plugins.yaml)"
                    ) from None
                raise PluginError(f"{shown}: cannot connect ({exc})") from None
            except httpx.HTTPError as exc:
                raise PluginError(f"{shown}: download failed ({type(exc).__name__})") from None
    raise PluginError(f"{shown}: more than {_MAX_REDIRECTS} redirects")
