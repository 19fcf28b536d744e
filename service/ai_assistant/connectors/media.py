"""Images and voice messages from the platforms: the bytes are downloaded through the platform's API by the worker
(never at the edge, which must ack within the platform's deadline), bounded in size while they stream in, and checked
to be what they claim before an input adapter (OCR, speech-to-text) sees them.

Platforms label downloads loosely (Telegram serves every file as application/octet-stream), so the check is on the
content's own signature; a declared type that says text, HTML or JSON (an error page) is refused whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from ..messages import Attachment

DEFAULT_MAX_BYTES = 20 * 1024 * 1024

# Leading bytes of the formats the OCR and speech adapters decode (Pillow; PyAV/ffmpeg).
_IMAGE = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"BM": "image/bmp",
}
_VOICE = {
    b"OggS": "audio/ogg",
    b"#!AMR": "audio/amr",
    b"ID3": "audio/mpeg",
    b"\xff\xfb": "audio/mpeg",
    b"\xff\xf3": "audio/mpeg",
    b"fLaC": "audio/flac",
}


class MediaUnavailable(Exception):
    """The attachment could not be fetched or is not what it says; `str()` is a reason fit to show the user."""


def sniff(kind: str, data: bytes, declared: str | None) -> str:
    """The attachment's MIME type from its content, or MediaUnavailable when it is not a `kind` file."""
    label = (declared or "").split(";")[0].strip().lower()
    if label.startswith(("text/", "application/json")) or label.endswith(("html", "xml")):
        raise MediaUnavailable(f"the platform sent {label}, not the {kind}")
    if kind == "image":
        found = next((m for sig, m in _IMAGE.items() if data.startswith(sig)), None)
        if found is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            found = "image/webp"
    elif kind == "voice":
        found = next((m for sig, m in _VOICE.items() if data.startswith(sig)), None)
        if found is None and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            found = "audio/wav"
        if found is None and data[4:8] == b"ftyp":  # MP4/M4A audio
            found = "audio/mp4"
    else:
        raise MediaUnavailable(f"{kind} attachments are not read")
    if found is None:
        raise MediaUnavailable(f"the file is not in a readable {kind} format")
    return found


async def download(
    http: httpx.AsyncClient, url: str, max_bytes: int, *, headers: Mapping[str, str] | None = None
) -> tuple[bytes, str | None]:
    """GET `url` with redirects refused, stopping as soon as more than `max_bytes` arrived. Returns (bytes, the
    declared content type)."""
    try:
        async with http.stream("GET", url, headers=dict(headers or {}), follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise MediaUnavailable(f"the platform answered HTTP {resp.status_code} to the download")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise MediaUnavailable(f"the file is larger than {max_bytes // (1024 * 1024)} MiB")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise MediaUnavailable(f"the file is larger than {max_bytes // (1024 * 1024)} MiB")
                chunks.append(chunk)
            return b"".join(chunks), resp.headers.get("content-type")
    except httpx.HTTPError as exc:
        raise MediaUnavailable(f"the download failed ({type(exc).__name__})") from None


def describe(attachment: Attachment) -> str:
    return {"image": "an image", "voice": "a voice message"}.get(attachment.kind, f"a {attachment.kind}")
