"""Issue 21, item 4: images and voice messages from the platforms reach the input adapters. The real Telegram
connector reads updates built by python-telegram-bot (the platform's real message shapes) and downloads the file
through getFile from the platform API stand-in on loopback (the platform cannot be reached here); the real RapidOCR
adapter reads the image; the real pipeline and SQLite store; the engine is the stand-in model server process that
records its prompts."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ai_assistant.connectors.media import MediaUnavailable
from ai_assistant.connectors.telegram import TelegramConfig, TelegramConnector
from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.messages import Attachment, InboundMessage, RawRequest
from ai_assistant.pipeline.filters import SensitiveWordFilter
from ai_assistant.pipeline.worker import Pipeline
from ai_assistant.settings import EngineSettings, Settings
from ai_assistant.store.sqlite import SQLiteStore
from tests.connectors import producers as p
from tests.connectors.cases import TELEGRAM
from tests.connectors.standin import PlatformStandIn
from tests.faults.procs import EngineStandin

from .conftest import Recorder

pytestmark = pytest.mark.anyio

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FILE_PATH = f"/file/bot{p.TG_BOT_TOKEN}/photos/file_0.jpg"  # where the stand-in's getFile says the file is


@pytest.fixture
def platform() -> Iterator[PlatformStandIn]:
    standin = PlatformStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def invoice_png() -> bytes:
    if not FONT.exists():
        pytest.skip("fonts-wqy-microhei is not installed (scripts/bootstrap installs it): no font to draw with")
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (900, 120), "white")
    ImageDraw.Draw(img).text((30, 30), "Invoice No. 12345", font=ImageFont.truetype(str(FONT), 44), fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def telegram(base: str, **options: Any) -> TelegramConnector:
    return TelegramConnector("telegram", TelegramConfig.model_validate({**TELEGRAM.options(base), **options}))


def update(update_id: int, **fields: Any) -> dict[str, Any]:
    from telegram import Chat, Message, Update, User

    message = Message(
        message_id=update_id,
        date=datetime.now(tz=UTC),
        chat=Chat(id=777, type=Chat.PRIVATE),
        from_user=User(id=777, first_name="Ann", is_bot=False),
        **fields,
    )
    return dict(Update(update_id=update_id, message=message).to_dict())


def photo_update(update_id: int) -> dict[str, Any]:
    from telegram import PhotoSize

    sizes = (PhotoSize("small-id", "s1", 90, 12), PhotoSize("large-id", "s2", 900, 120, file_size=4000))
    return update(update_id, photo=sizes, caption="What is this invoice number?")


async def verify(connector: TelegramConnector, body: dict[str, Any]) -> InboundMessage:
    req = p.telegram_request(body)
    raw = RawRequest(req.method, req.path, {k.lower(): v for k, v in req.headers.items()}, {}, req.body)
    [msg] = (await connector.verify(raw)).messages
    return msg


async def test_a_telegram_photo_is_downloaded_and_read_by_ocr(
    tmp_path: Path, platform: PlatformStandIn, invoice_png: bytes
) -> None:
    from ai_assistant.inputs.image import ImageOCRAdapter

    pytest.importorskip("rapidocr_onnxruntime", reason="the media extra (rapidocr-onnxruntime) is not installed")
    platform.files[FILE_PATH] = (invoice_png, "application/octet-stream")  # as Telegram labels every file
    connector = telegram(platform.base)
    engine = EngineStandin(tmp_path).start()
    store = SQLiteStore(tmp_path / "state.sqlite3")
    words = SensitiveWordFilter([], "mask")
    pipe = Pipeline(
        Settings(config_dir=tmp_path, data_dir=tmp_path),
        store,
        HFInferenceEngine(EngineSettings(base_url=engine.base_url)),
        {"telegram": connector},
        Recorder(),
        words,
        words,
        adapters={"image": ImageOCRAdapter()},
    )
    try:
        msg = await verify(connector, photo_update(501))
        assert msg.text == "What is this invoice number?"
        assert [(a.kind, a.ref, a.data_b64) for a in msg.attachments] == [("image", "large-id", None)]
        assert await store.enqueue(msg.model_copy(update={"received_at": time.time()}), 60)
        job = await store.claim(30)
        assert job is not None
        await pipe.process(job)
        [get_file] = [c for c in platform.calls if c.path.endswith("/getFile")]
        assert get_file.body == {"file_id": "large-id"}, "the largest size is the one fetched"
        [request] = engine.requests()
        prompt = request["body"]["messages"][-1]["content"]
        assert prompt.startswith("What is this invoice number?\n[image] ") and "12345" in prompt, prompt
    finally:
        await store.close()
        await connector.aclose()
        engine.kill()


async def test_a_telegram_voice_message_carries_its_file_id(platform: PlatformStandIn) -> None:
    from telegram import Voice

    connector = telegram(platform.base)
    try:
        msg = await verify(connector, update(502, voice=Voice("voice-id", "v1", 3, mime_type="audio/ogg")))
        assert msg.text == ""
        assert [(a.kind, a.ref, a.mime_type) for a in msg.attachments] == [("voice", "voice-id", "audio/ogg")]
        platform.files[FILE_PATH] = (b"OggS" + bytes(200), "application/octet-stream")
        data, mime = await connector.fetch_media(msg, msg.attachments[0])
        assert mime == "audio/ogg" and data.startswith(b"OggS")
    finally:
        await connector.aclose()


BAD_FILES = {
    "an error page": ((b"<html>expired</html>", "text/html"), "text/html, not the image"),
    "not an image": ((b"PK\x03\x04 a zip file" * 10, "application/octet-stream"), "not in a readable image format"),
    "too large": ((b"\x89PNG\r\n\x1a\n" + bytes(4096), "image/png"), "larger than"),
    "missing": (None, "HTTP 404"),
}


@pytest.mark.parametrize("case", BAD_FILES)
async def test_bad_downloads_become_a_note_for_the_user(case: str, tmp_path: Path, platform: PlatformStandIn) -> None:
    served, expected = BAD_FILES[case]
    if served is not None:
        platform.files[FILE_PATH] = served
    connector = telegram(platform.base, media_max_bytes=2048)
    attachment = Attachment(kind="image", ref="large-id")
    msg = InboundMessage(
        connector="telegram", event_id="e", chat_id="777", user_id="u", text="", attachments=[attachment]
    )
    try:
        with pytest.raises(MediaUnavailable) as refused:
            await connector.fetch_media(msg, attachment)
        assert expected in str(refused.value), str(refused.value)
        assert p.TG_BOT_TOKEN not in str(refused.value), "the token-bearing URL never appears in a reason"
        # Through the worker: the user's text gains one line saying why the file was not read.
        store = SQLiteStore(tmp_path / "state.sqlite3")
        words = SensitiveWordFilter([], "mask")
        pipe = Pipeline(
            Settings(config_dir=tmp_path, data_dir=tmp_path), store, object(), {"telegram": connector},
            Recorder(), words, words,
        )  # fmt: skip
        read = await pipe._with_media(msg)
        await store.close()
        assert read.attachments == [] and read.text.startswith("(the user sent an image that could not be read:")
        assert json.dumps(read.model_dump()).count(expected.split(",")[0]) >= 1
    finally:
        await connector.aclose()


async def raw(req: p.Req) -> RawRequest:
    return RawRequest(req.method, req.path, {k.lower(): v for k, v in req.headers.items()}, dict(req.query), req.body)


def pipeline_for(tmp_path: Path, connector: Any, store: SQLiteStore) -> Pipeline:
    words = SensitiveWordFilter([], "mask")
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path)
    return Pipeline(settings, store, object(), {connector.name: connector}, Recorder(), words, words)


async def test_a_slack_file_share_is_downloaded_with_the_bot_token(
    tmp_path: Path, platform: PlatformStandIn, invoice_png: bytes
) -> None:
    from ai_assistant.connectors.slack import SlackConfig, SlackConnector
    from tests.connectors.cases import SLACK

    connector = SlackConnector("slack", SlackConfig.model_validate(SLACK.options(platform.base)))
    url = f"{platform.base}/files-pri/T0TEAM001-F0FILE001/download/invoice.png"
    platform.files["/files-pri/T0TEAM001-F0FILE001/download/invoice.png"] = (invoice_png, "image/png")
    payload = p.slack_event("EvFile1", "what is this?")
    payload["event"] |= {
        "subtype": "file_share",
        "files": [
            {"id": "F0FILE001", "name": "invoice.png", "mimetype": "image/png", "filetype": "png",
             "url_private": url, "url_private_download": url, "size": len(invoice_png)},
            {"id": "F0FILE002", "name": "notes.pdf", "mimetype": "application/pdf", "url_private": url},
        ],
    }  # fmt: skip
    store = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        [msg] = (await connector.verify(await raw(p.slack_request(payload)))).messages
        assert msg.text == "what is this?"
        assert [(a.kind, a.ref) for a in msg.attachments] == [("image", url)], "the PDF is not an image or voice"
        read = await pipeline_for(tmp_path, connector, store)._with_media(msg)
        [image] = read.attachments
        assert image.mime_type == "image/png" and base64.b64decode(image.data_b64 or "") == invoice_png
        [download] = [c for c in platform.calls if c.path.startswith("/files-pri/")]
        assert download.headers["authorization"] == f"Bearer {p.SLACK_BOT_TOKEN}"

        elsewhere = msg.attachments[0].model_copy(update={"ref": "https://attacker.example/x.png"})
        with pytest.raises(MediaUnavailable, match="not on Slack's file host"):
            await connector.fetch_media(msg, elsewhere)  # the bot token never goes to another host
    finally:
        await store.close()
        await connector.aclose()


@pytest.mark.parametrize(
    ("message_type", "content", "kind", "query"),
    [
        ("image", {"image_key": "img_v2_0001"}, "image", "type=image"),
        ("audio", {"file_key": "file_v2_0002", "duration": 2000}, "voice", "type=file"),
    ],
)
async def test_a_feishu_image_or_voice_message_is_read_through_its_message(
    tmp_path: Path, platform: PlatformStandIn, invoice_png: bytes, message_type: str, content: dict[str, Any],
    kind: str, query: str,
) -> None:  # fmt: skip
    from ai_assistant.connectors.feishu import FeishuConfig, FeishuConnector
    from tests.connectors.cases import FEISHU

    connector = FeishuConnector("feishu", FeishuConfig.model_validate(FEISHU.options(platform.base)))
    key = next(iter(v for v in content.values() if isinstance(v, str)))
    data = invoice_png if kind == "image" else b"OggS" + bytes(300)
    platform.files[f"/open-apis/im/v1/messages/om_media1/resources/{key}"] = (data, "application/octet-stream")
    event = p.feishu_message("ev-media1", "om_media1")
    event["event"]["message"] |= {"message_type": message_type, "content": json.dumps(content)}
    store = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        [msg] = (await connector.verify(await raw(p.feishu_request(event)))).messages
        assert msg.text == "" and [(a.kind, a.ref) for a in msg.attachments] == [(kind, key)]
        read = await pipeline_for(tmp_path, connector, store)._with_media(msg)
        [got] = read.attachments
        assert base64.b64decode(got.data_b64 or "") == data
        assert got.mime_type == ("image/png" if kind == "image" else "audio/ogg")
        [download] = [c for c in platform.calls if "/resources/" in c.path]
        assert download.query == {"type": query.split("=")[1]}
        assert download.headers["authorization"].startswith("Bearer t-"), "the tenant token the stand-in issued"
    finally:
        await store.close()
        await connector.aclose()


async def test_a_dingtalk_picture_is_fetched_through_its_download_code(
    tmp_path: Path, platform: PlatformStandIn, invoice_png: bytes
) -> None:
    from ai_assistant.connectors.dingtalk import DingTalkConfig, DingTalkConnector
    from tests.connectors.cases import DINGTALK

    connector = DingTalkConnector("dingtalk", DingTalkConfig.model_validate(DINGTALK.options(platform.base)))
    body = p.dingtalk_message("msgpic1", session_webhook=f"{platform.base}/robot/sendBySession?session=s1")
    del body["text"]
    body |= {"msgtype": "picture", "content": {"downloadCode": "dlcode-001", "pictureDownloadCode": "pic-001"}}
    platform.files["/dingtalk-files/1"] = (invoice_png, "image/png")
    store = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        [msg] = (await connector.verify(await raw(p.dingtalk_request(body)))).messages
        assert msg.text == "" and [(a.kind, a.ref) for a in msg.attachments] == [("image", "dlcode-001")]
        read = await pipeline_for(tmp_path, connector, store)._with_media(msg)
        assert base64.b64decode(read.attachments[0].data_b64 or "") == invoice_png
        [resolve] = [c for c in platform.calls if c.path == "/v1.0/robot/messageFiles/download"]
        assert resolve.body == {"downloadCode": "dlcode-001", "robotCode": p.DT_ROBOT}
    finally:
        await store.close()
        await connector.aclose()


def wecom_media(msg_id: str, kind: str, media_id: str) -> str:
    extra = (
        "<Format><![CDATA[amr]]></Format>"
        if kind == "voice"
        else "<PicUrl><![CDATA[https://wework.qpic.cn/x]]></PicUrl>"
    )
    return (
        f"<xml><ToUserName><![CDATA[{p.WECOM_CORP}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>"
        f"<MediaId><![CDATA[{media_id}]]></MediaId>{extra}<MsgId>{msg_id}</MsgId><AgentID>{p.WECOM_AGENT}</AgentID></xml>"
    )


@pytest.mark.parametrize(
    ("kind", "data", "mime"), [("voice", b"#!AMR\n" + bytes(64), "audio/amr"), ("image", None, "image/png")]
)
async def test_a_wecom_image_or_voice_is_fetched_with_media_get(
    tmp_path: Path, platform: PlatformStandIn, invoice_png: bytes, kind: str, data: bytes | None, mime: str
) -> None:
    from ai_assistant.connectors.wecom import WeComConfig, WeComConnector
    from tests.connectors.cases import WECOM

    connector = WeComConnector("wecom", WeComConfig.model_validate(WECOM.options(platform.base)))
    content = data or invoice_png
    platform.files["/cgi-bin/media/get"] = (content, "application/octet-stream")
    store = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        [msg] = (await connector.verify(await raw(p.wecom_post(wecom_media("7100001", kind, "media-9"))))).messages
        assert [(a.kind, a.ref) for a in msg.attachments] == [(kind, "media-9")]
        read = await pipeline_for(tmp_path, connector, store)._with_media(msg)
        [got] = read.attachments
        assert base64.b64decode(got.data_b64 or "") == content and got.mime_type == mime
        [fetch] = [c for c in platform.calls if c.path == "/cgi-bin/media/get"]
        assert fetch.query["media_id"] == "media-9" and fetch.query["access_token"].startswith("wx-")
    finally:
        await store.close()
        await connector.aclose()


SPOKEN = "Please reset my password."


async def test_a_telegram_voice_message_is_transcribed_by_the_speech_adapter(
    tmp_path: Path, platform: PlatformStandIn
) -> None:
    """Telegram serves voice as Ogg/Opus; the clip here is a WAV made by espeak-ng (the speech adapter decodes both;
    its Ogg/Opus path is tested in tests/plugins/test_media_inputs.py)."""
    import shutil
    import subprocess

    from telegram import Voice

    pytest.importorskip("faster_whisper", reason="the media extra (faster-whisper) is not installed")
    from ai_assistant.inputs.voice import WhisperSpeechAdapter, assemble_model

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (scripts/bootstrap installs it): no way to make a spoken clip")
    wav = tmp_path / "clip.wav"
    subprocess.run([espeak, "-v", "en", "-w", str(wav), SPOKEN], check=True, timeout=60)
    platform.files[FILE_PATH] = (wav.read_bytes(), "application/octet-stream")
    connector = telegram(platform.base)
    engine = EngineStandin(tmp_path).start()
    store = SQLiteStore(tmp_path / "state.sqlite3")
    words = SensitiveWordFilter([], "mask")
    stt = WhisperSpeechAdapter(model_dir=assemble_model(tmp_path / "models"), language="en")
    settings = Settings(config_dir=tmp_path, data_dir=tmp_path)
    model = HFInferenceEngine(EngineSettings(base_url=engine.base_url))
    pipe = Pipeline(settings, store, model, {"telegram": connector}, Recorder(), words, words, adapters={"voice": stt})
    try:
        msg = await verify(connector, update(503, voice=Voice("voice-id", "v1", 2, mime_type="audio/ogg")))
        assert await store.enqueue(msg.model_copy(update={"received_at": time.time()}), 60)
        job = await store.claim(120)
        assert job is not None
        await pipe.process(job)
        [request] = engine.requests()
        prompt = request["body"]["messages"][-1]["content"]
        assert prompt.startswith("[voice] ") and "password" in prompt.lower(), prompt
    finally:
        await store.close()
        await connector.aclose()
        engine.kill()
