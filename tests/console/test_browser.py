"""The console in Debian's real chromium (headless, through chromium-driver and Selenium) against the real
`ai-assistant serve` process and the real model server. The only stand-in is the IM platform's receiving side
(ReplyReceiver). Screenshots of every page land in <tmp>/screens for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.console.conftest import ADMIN, NEW_SECRET, VIEWER, create_user
from tests.helpers import (
    ReplyReceiver,
    ServiceProcess,
    message,
    signed_generic_request,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.model


def test_console_in_chromium(tmp_path: Path, browser: object, receiver: ReplyReceiver, model_server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    screens = tmp_path / "screens"
    screens.mkdir()
    team_b = ReplyReceiver(secret=NEW_SECRET)
    config = write_config(
        tmp_path / "config",
        reply_url=receiver.url,
        engine_url=model_server,
        assistant={"console": {"max_failed_logins": 3, "lockout_seconds": 600}},
    )
    data = tmp_path / "data"
    create_user(data, *ADMIN, "admin")
    create_user(data, *VIEWER, "viewer")
    svc = ServiceProcess(config, data).start()

    def shot(name: str) -> None:
        driver.save_screenshot(str(screens / f"{name}.png"))

    def text(css: str) -> str:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)

    def loaded() -> None:
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def click(element_id: str) -> None:
        """Click, then wait until the next page has replaced this one and finished loading (a click returns as soon
        as the event is dispatched, before the browser has the server's answer)."""
        loaded()
        page = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.ID, element_id).click()
        WebDriverWait(driver, 60).until(staleness_of(page))
        loaded()

    def run_js(script: str) -> None:
        loaded()
        page = driver.find_element(By.TAG_NAME, "html")
        driver.execute_script(script)
        WebDriverWait(driver, 60).until(staleness_of(page))
        loaded()

    def sign_in(name: str, password: str) -> None:
        driver.get(svc.base + "/admin/login")
        driver.find_element(By.ID, "name").clear()
        driver.find_element(By.ID, "name").send_keys(name)
        driver.find_element(By.ID, "password").send_keys(password)
        click("sign-in")

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
        assert "next restart" in text("#saved")
        written = yaml.safe_load((config / "connectors.yaml").read_text())["team-b"]
        assert written["app_secret"].startswith("${") and written["bot_name"] == "助理B"
        assert written["group_mention_only"] is True  # the model's default, shown checked, kept
        shot("04-connectors-saved")

        # It applies at the next restart (connectors are built at start); the session survives it.
        svc.stop()
        svc = ServiceProcess(config, data).start()
        body, headers = signed_generic_request(message("evt-console", "Name three colours."), NEW_SECRET)
        assert svc.post("/api/im/team-b", body, headers).status_code == 200
        reply = wait_until(lambda: team_b.for_event("evt-console"), 90, "the answer on the new connector")
        assert reply[0]["chat_id"] == "chat-1" and reply[0]["text"].strip()
        driver.get(svc.base + "/admin/overview")
        assert text("#user") == "alice"
        wait_until(lambda: driver.refresh() or "Answered: 1" in text(".tiles"), 30, "the answer in the overview")
        shot("05-overview-after-answer")
        driver.get(svc.base + "/admin/audit")
        assert "connector.add" in text("#audit") and NEW_SECRET not in driver.page_source
        shot("06-audit")
        driver.get(svc.base + "/admin/connectors/team-b/edit")
        assert NEW_SECRET not in driver.page_source
        shot("07-connector-edit")

        # CSRF: a form posted without its token changes nothing.
        driver.get(svc.base + "/admin/connectors")
        run_js(
            "const f = document.querySelector('form[action$=\"/team-b/disable\"]');"
            "f.querySelector('[name=csrf_token]').remove(); f.submit();"
        )
        assert "security token" in driver.page_source
        shot("08-csrf-refused")
        assert "team-b" in (config / "connectors.yaml").read_text()

        # Chinese, and a phone-sized window.
        driver.get(svc.base + "/admin/connectors")
        click("lang")
        assert "连接器" in driver.find_element(By.TAG_NAME, "h1").text
        driver.set_window_size(390, 844)
        shot("09-connectors-zh-phone")
        click("lang")
        driver.set_window_size(1280, 900)

        # A viewer sees, and is refused a change even when the form is submitted by hand.
        click("logout")
        sign_in(*VIEWER)
        driver.get(svc.base + "/admin/connectors/team-b/edit")
        assert not driver.find_elements(By.ID, "save")
        run_js("document.getElementById('connector-form').submit();")
        assert "can view but not change" in driver.page_source
        shot("10-viewer-refused")
        click("logout")

        # Lock-out: three wrong passwords, then even the right one is refused.
        for _ in range(3):
            sign_in(ADMIN[0], "wrong password")
        assert "locked" in text("#message")
        sign_in(*ADMIN)
        assert driver.current_url.endswith("/admin/login") and "locked" in text("#message")
        shot("11-locked-out")
    finally:
        svc.stop()
        team_b.close()
        print(f"\n[console screenshots in {screens}]")
