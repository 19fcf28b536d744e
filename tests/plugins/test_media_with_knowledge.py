"""The OCR adapter in a process whose knowledge base has already loaded usearch, as in a running service.

usearch's private libstdc++ and the system's used to disagree on std::locale, and onnxruntime (the OCR engine)
segfaulted while importing (service/ai_assistant/knowledge/stores/_libstdcxx.py). A crash would take pytest down with
it, so each case runs in a fresh interpreter; it is only reached in that order, which the rest of the suite need not
follow."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    find_spec("rapidocr_onnxruntime") is None, reason="the media extra (rapidocr-onnxruntime) is not installed"
)

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        died = f" ({signal.Signals(-proc.returncode).name})" if proc.returncode < 0 else ""
        pytest.fail(f"the interpreter exited with {proc.returncode}{died}:\n{proc.stderr[-3000:]}")
    return proc


def test_onnxruntime_imports_after_the_embedded_store() -> None:
    proc = run_fresh(
        """
        import ai_assistant.knowledge.stores.embedded  # usearch loads here, at service start
        import onnxruntime  # the OCR adapter loads it on the first image
        print("imported")
        """
    )
    assert proc.stdout.strip() == "imported"


def test_image_message_in_a_service_with_the_knowledge_base_on(tmp_path: Path) -> None:
    """The service's own parts (build_parts, adapters from the entry points, knowledge on) reading an image."""
    proc = run_fresh(
        """
        import asyncio, base64, io, sys
        from pathlib import Path

        from PIL import Image, ImageDraw, ImageFont

        from ai_assistant.app import build_parts
        from ai_assistant.messages import Attachment, InboundMessage
        from ai_assistant.pipeline.adapters import message_text
        from ai_assistant.settings import load_settings
        from tests.helpers import write_config

        tmp = Path(sys.argv[1])
        config = write_config(
            tmp / "config", reply_url="http://127.0.0.1:9/replies", engine_url="http://127.0.0.1:9/v1",
            assistant={"knowledge": {"enabled": True}},
        )
        parts = build_parts(load_settings(config, tmp / "data"))
        kb = parts.knowledge
        assert kb is not None and "image" in parts.pipeline.adapters
        doc = b"# Invoices\\n\\nInvoices are paid within thirty days of receipt, by bank transfer only.\\n"
        print("ingested", kb.ingest_bytes_sync(doc, "invoices.md").status)

        image = Image.new("RGB", (640, 120), "white")
        ImageDraw.Draw(image).text((20, 30), "Invoice 12345", fill="black", font=ImageFont.load_default(size=48))
        png = io.BytesIO()
        image.save(png, "PNG")
        message = InboundMessage(
            connector="im-connector", event_id="evt-1", chat_id="chat-1", user_id="u-1", text="What is this?",
            attachments=[Attachment(kind="image", data_b64=base64.b64encode(png.getvalue()).decode())],
        )
        print(asyncio.run(message_text(message, parts.pipeline.adapters)))
        hits = kb.search_sync("When are invoices paid?", min_score=-1.0)  # usearch again, after onnxruntime
        print("found", hits[0].chunk.title if hits else None)
        kb.close()
        """,
        str(tmp_path),
    )
    assert "12345" in proc.stdout, proc.stdout
    assert "found Invoices" in proc.stdout, proc.stdout
