"""Image and voice input: real OCR (RapidOCR's PP-OCRv4 models from its wheel) and real speech-to-text (Whisper base
from two wheels under faster-whisper) on content made here (Pillow + the WenQuanYi font, espeak-ng), then end to end
through the worker pipeline into an answer from the real embedded model."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.inputs.image import ImageOCRAdapter
from ai_assistant.inputs.voice import SAMPLE_RATE, WhisperSpeechAdapter, assemble_model, decode_bounded
from ai_assistant.messages import Attachment, ChatTurn, InboundMessage

pytest.importorskip("rapidocr_onnxruntime", reason="the media extra (rapidocr-onnxruntime) is not installed")
pytest.importorskip("faster_whisper", reason="the media extra (faster-whisper) is not installed")

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
LINES = ["Invoice No. 12345, total $678.90", "私有知识库助手支持中文和英文", "Hello World from RapidOCR"]
SPOKEN = "Please reset my password. The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def image_b64() -> str:
    if not FONT.exists():
        pytest.skip("fonts-wqy-microhei is not installed (scripts/bootstrap installs it): no CJK font to draw with")
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (900, 260), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(FONT), 40)
    for i, line in enumerate(LINES):
        draw.text((30, 30 + 80 * i), line, font=font, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def voice_b64(tmp_path_factory: pytest.TempPathFactory) -> str:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (scripts/bootstrap installs it): no way to make a spoken clip")
    wav = tmp_path_factory.mktemp("voice") / "clip.wav"
    subprocess.run([espeak, "-v", "en", "-w", str(wav), SPOKEN], check=True, timeout=60)
    return base64.b64encode(wav.read_bytes()).decode()


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def ocr() -> ImageOCRAdapter:
    return ImageOCRAdapter()


@pytest.fixture(scope="module")
def stt(model_cache: Path) -> WhisperSpeechAdapter:
    return WhisperSpeechAdapter(model_dir=model_cache, language="en")


def test_ocr_reads_chinese_and_english(ocr: ImageOCRAdapter, image_b64: str) -> None:
    text = asyncio.run(ocr.to_text(Attachment(kind="image", data_b64=image_b64, mime_type="image/png")))
    lines = text.splitlines()
    assert len(lines) == 3, text
    assert "12345" in lines[0]
    assert "678.90" in lines[0]
    assert "私有知识库助手" in lines[1]
    assert "中文和英文" in lines[1]
    assert "Hello World" in lines[2]


def test_speech_to_text_of_a_spoken_english_clip(stt: WhisperSpeechAdapter, voice_b64: str) -> None:
    text = asyncio.run(stt.to_text(Attachment(kind="voice", data_b64=voice_b64, mime_type="audio/wav"))).lower()
    assert "reset my password" in text
    assert "lazy dog" in text


def test_model_assembly_is_idempotent(model_cache: Path) -> None:
    before = (model_cache / "model.bin").stat().st_mtime_ns
    assert assemble_model(model_cache.parent) == model_cache
    assert (model_cache / "model.bin").stat().st_mtime_ns == before
    assert sorted(p.name for p in model_cache.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.json",
    ]


@pytest.mark.parametrize(
    ("attachment", "expected"),
    [
        (Attachment(kind="image", data_b64=base64.b64encode(b"not an image").decode()), "not a supported image format"),
        (Attachment(kind="image", data_b64="%%%not base64%%%"), "not valid base64"),
        (Attachment(kind="image", url="https://im.example/media/1"), "given only as a link"),
        (Attachment(kind="image"), "attachment is empty"),
        (Attachment(kind="image", data_b64="A" * (11 * 1024 * 1024 * 4 // 3)), "larger than 10 MiB"),
    ],
)
def test_bad_images_become_a_note_not_an_error(ocr: ImageOCRAdapter, attachment: Attachment, expected: str) -> None:
    text = asyncio.run(ocr.to_text(attachment))
    assert text.startswith("(the user sent an image that could not be read: ")
    assert expected in text


def test_image_over_the_pixel_limit_is_not_decoded(image_b64: str) -> None:
    text = asyncio.run(ImageOCRAdapter(max_pixels=10_000).to_text(Attachment(kind="image", data_b64=image_b64)))
    assert "900x260 pixels, more than allowed" in text


def test_bad_voice_clips_become_a_note(stt: WhisperSpeechAdapter, voice_b64: str, model_cache: Path) -> None:
    garbage = base64.b64encode(b"\x00\x01garbage" * 200).decode()
    text = asyncio.run(stt.to_text(Attachment(kind="voice", data_b64=garbage)))
    assert "could not be read: not a supported audio format" in text
    short = WhisperSpeechAdapter(model_dir=model_cache, max_seconds=1.0)
    text = asyncio.run(short.to_text(Attachment(kind="voice", data_b64=voice_b64)))
    assert "the clip is longer than 1 s" in text


def to_ogg_opus(samples: Any) -> bytes:
    """16 kHz mono int16 samples as Ogg/Opus, the format Telegram and Feishu voice messages arrive in."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=SAMPLE_RATE)
        stream.bit_rate = 12000
        stream.layout = "mono"
        step = SAMPLE_RATE * 20
        for start in range(0, samples.shape[0], step):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + step], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_ogg_opus_voice_message(stt: WhisperSpeechAdapter, voice_b64: str) -> None:
    import numpy as np

    pcm = (decode_bounded(base64.b64decode(voice_b64), 60) * 32767).astype(np.int16)
    ogg = to_ogg_opus(pcm)
    text = asyncio.run(stt.to_text(Attachment(kind="voice", data_b64=base64.b64encode(ogg).decode())))
    assert "password" in text.lower()


def test_hours_of_audio_in_a_small_file_are_refused_while_decoding(stt: WhisperSpeechAdapter) -> None:
    """320 s of silence is ~120 KB of Opus but 20 MB of samples: the clip is refused once 300 s have been decoded."""
    import numpy as np

    ogg = to_ogg_opus(np.zeros(SAMPLE_RATE * 320, dtype=np.int16))
    assert len(ogg) < 300_000
    text = asyncio.run(stt.to_text(Attachment(kind="voice", data_b64=base64.b64encode(ogg).decode())))
    assert "the clip is longer than 300 s" in text


class RecordingEngine:
    """Passes every call to the real engine and keeps the turns it was given (to see what the adapters produced)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.name = real.name
        self.calls: list[list[ChatTurn]] = []

    async def chat(self, turns: list[ChatTurn]) -> str:
        self.calls.append(turns)
        answer: str = await self.real.chat(turns)
        return answer

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.mark.model
def test_image_and_voice_reach_the_engine_and_come_back_as_an_answer(
    model_server: str, tmp_path: Path, receiver: Any, image_b64: str, voice_b64: str, model_cache: Path
) -> None:
    from ai_assistant.app import build_parts
    from ai_assistant.registry import Kind, default_registry
    from ai_assistant.settings import load_settings
    from tests.helpers import write_config

    config_dir = write_config(tmp_path / "config", reply_url=receiver.url, engine_url=model_server)
    settings = load_settings(config_dir, tmp_path / "data")
    registry = default_registry()
    registry.register(Kind.INPUT_ADAPTER, "image_ocr", ImageOCRAdapter)
    registry.register(Kind.INPUT_ADAPTER, "voice_whisper", lambda: WhisperSpeechAdapter(model_dir=model_cache))
    parts = build_parts(settings, registry)
    engine = RecordingEngine(parts.engine)
    parts.pipeline.engine = engine

    message = InboundMessage(
        connector="im-connector",
        event_id="evt-media-1",
        chat_id="chat-1",
        user_id="u-1",
        text="Summarise what I sent.",
        attachments=[
            Attachment(kind="image", data_b64=image_b64, mime_type="image/png"),
            Attachment(kind="voice", data_b64=voice_b64, mime_type="audio/wav"),
        ],
    )

    async def run() -> None:
        # The real worker loop, so a slow moment on a busy machine is retried the way production retries it.
        stop = asyncio.Event()
        worker = asyncio.create_task(parts.pipeline.run(stop))
        try:
            assert await parts.store.enqueue(message, 3600)
            deadline = asyncio.get_running_loop().time() + 300
            while not receiver.for_event("evt-media-1") and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await worker
            for connector in parts.connectors.values():
                await connector.aclose()
            await engine.aclose()
            await parts.store.close()

    asyncio.run(run())
    assert engine.calls, "the engine was never called"
    prompt = engine.calls[0][-1].content
    assert "[image] Invoice No. 12345" in prompt
    assert "私有知识库助手" in prompt
    assert "reset my password" in prompt.lower()
    replies = receiver.for_event("evt-media-1")
    assert replies, "no answer was delivered"
    assert all(r["text"].strip() for r in replies)
