"""The workflow canvas in Debian's real chromium (Selenium, headless) against the real `ai-assistant serve` process:
build trigger -> reply by dragging nodes from the palette and an edge between them, see the unconnected reply named
by Validate, dry-run it, save it, save it again unedited (same bytes), restart, and send a signed message through the
webhook path: the workflow answers. The stand-in is only the IM platform's receiving side (ReplyReceiver). No model
is needed: the flow has no LLM node, so the engine URL points nowhere. Screenshots land in <tmp>/screens."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from ai_assistant.workflows.versions import canonical, parse_text
from tests.console.conftest import ADMIN, create_user, replaced
from tests.console.test_browser_pages import Service
from tests.helpers import ReplyReceiver, message, signed_generic_request, wait_until, write_config

VENDOR = Path(__file__).parents[2] / "service/ai_assistant/console/static/vendor/drawflow"
ANSWER = "Hi from the canvas workflow"
EXAMPLE = Path(__file__).parents[2] / "config/workflows/examples/order-status.yaml"
ERP_ENV = {"ERP_TOKEN": "erp-token-for-the-canvas-test"}


def test_vendored_drawflow_matches_its_readme() -> None:
    readme = (VENDOR / "README.md").read_text()
    listed = dict(re.findall(r"`(drawflow\.min\.(?:js|css))`\s+([0-9a-f]{64})", readme))
    assert sorted(listed) == ["drawflow.min.css", "drawflow.min.js"]
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, f"{name} differs from README"
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_build_dry_run_save_and_answer_in_chromium(tmp_path: Path, browser: object) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    screens = tmp_path / "screens"
    screens.mkdir()
    receiver = ReplyReceiver()
    config = write_config(tmp_path / "config", reply_url=receiver.url, engine_url="http://127.0.0.1:9/v1")
    data = tmp_path / "data"
    create_user(data, *ADMIN, "admin")
    saved_file = config / "workflows" / "greet.yaml"
    # A richer document for the round trip (branch labels, an error edge, secrets): the shipped example, as a
    # console save would write it.
    example = canonical(parse_text(EXAMPLE.read_text(), "example", ERP_ENV))
    (config / "workflows").mkdir()
    (config / "workflows" / "order-status.yaml").write_text(example)
    svc = Service(config, data, env=ERP_ENV).start()

    def shot(name: str) -> None:
        driver.save_screenshot(str(screens / f"{name}.png"))

    def find(css: str) -> WebElement:
        return driver.find_element(By.CSS_SELECTOR, css)

    def until(what: str, check: Any, timeout: float = 60) -> Any:
        return WebDriverWait(driver, timeout).until(lambda d: check(), message=what)

    def loaded() -> None:
        until("page loaded", lambda: driver.execute_script("return document.readyState") == "complete")

    def drop(kind: str, dx: int, dy: int) -> None:
        """Press on the palette entry, move over the canvas in steps as a hand would, release."""
        before = len(driver.find_elements(By.CSS_SELECTOR, ".drawflow-node"))
        chain = ActionChains(driver).click_and_hold(find(f"#palette-{kind}"))
        for step in range(1, 6):
            chain.move_to_element_with_offset(find("#canvas"), dx * step // 5, dy * step // 5)
        chain.release().perform()
        until(
            f"{kind} node on the canvas", lambda: len(driver.find_elements(By.CSS_SELECTOR, ".drawflow-node")) > before
        )

    def configure(kind: str, fields: dict[str, Any]) -> None:
        find(f".drawflow-node.wf-{kind} .wf-title").click()
        until(f"{kind} selected", lambda: find("#node-title").text == kind)
        box = find("#node-config")
        box.clear()
        box.send_keys(json.dumps(fields))
        find("#node-apply").click()
        until(f"{kind} updated", lambda: "updated" in find("#result").text)

    def result(contains: str) -> str:
        return str(
            until(f"result with {contains!r}", lambda: contains in find("#result").text and find("#result").text)
        )

    try:
        driver.get(svc.base + "/admin/login")
        find("#name").send_keys(ADMIN[0])
        find("#password").send_keys(ADMIN[1])
        page = find("html")
        find("#sign-in").click()
        until("signed in", lambda: replaced(page)(driver))
        driver.get(svc.base + "/admin/workflows")
        loaded()
        assert "order-status" in find("#workflows").text and "greet" not in find("#workflows").text

        find("#wf-id").send_keys("greet")
        drop("trigger", -250, -100)
        drop("reply", 50, -100)
        configure("trigger", {"keywords": ["hello"]})
        configure("reply", {"text": ANSWER})
        drop("end", 50, 100)  # placed, then deleted again
        find(".drawflow-node.wf-end .wf-title").click()
        until("end selected", lambda: find("#node-title").text == "end")
        find("#node-delete").click()
        until("end deleted", lambda: not driver.find_elements(By.CSS_SELECTOR, ".drawflow-node.wf-end"))
        shot("31-canvas-two-nodes")

        # Not connected yet: the server names the trigger (its result goes nowhere), and the canvas marks it.
        find("#validate").click()
        assert "node start: has no outgoing edge" in result("outgoing")
        assert find(".drawflow-node.wf-bad").get_attribute("data-node-id") == "start"
        shot("32-canvas-validate-names-node")

        output = find(".drawflow-node.wf-trigger .outputs .output_1")
        target = find(".drawflow-node.wf-reply .inputs .input_1")
        chain = ActionChains(driver).click_and_hold(output)
        for offset in (20, 40, 60):
            chain.move_to_element_with_offset(output, offset, 0)
        chain.move_to_element(target).release().perform()
        until("the edge", lambda: driver.find_elements(By.CSS_SELECTOR, "svg.connection"))
        find("#validate").click()
        assert result("Valid").startswith("Valid: greet v1")

        find("#sample").send_keys("hello there")
        find("#dry-run").click()
        assert result("Answer") == f"Answer: {ANSWER}"
        steps = until("dry-run steps", lambda: driver.find_elements(By.CSS_SELECTOR, "#steps li.wf-step"))
        assert [s.get_attribute("data-node") for s in steps] == ["start", "reply-1"]
        assert ANSWER in steps[1].text, "each node's output is shown"
        shot("33-canvas-dry-run")

        page = find("html")
        find("#save-canvas").click()
        until("saved page", lambda: replaced(page)(driver))
        loaded()
        assert driver.current_url.endswith("/admin/workflows/greet?saved=1") and find("#saved").is_displayed()
        written = saved_file.read_text()
        assert yaml.safe_load(written) == {
            "id": "greet", "version": 1,
            "nodes": [{"id": "start", "kind": "trigger", "keywords": ["hello"]},
                      {"id": "reply-1", "kind": "reply", "text": ANSWER}],
            "edges": [{"from": "start", "to": "reply-1"}],
        }  # fmt: skip
        shot("34-canvas-saved")

        # Round trip: the saved YAML drawn on the canvas is the same document, and saving it unedited writes the
        # same bytes (the replaced file is kept as version 1).
        assert driver.execute_script("return window.workflowEditor.toDocument()") == yaml.safe_load(written)
        page = find("html")
        find("#save-canvas").click()
        until("saved again", lambda: replaced(page)(driver))
        loaded()
        assert saved_file.read_text() == written
        assert (config / "workflows/versions/greet.v1.yaml").read_text() == written

        driver.get(svc.base + "/admin/workflows/order-status")
        loaded()
        drawn = driver.execute_script("return window.workflowEditor.toDocument()")
        assert drawn == yaml.safe_load(example)
        page = find("html")
        find("#save-canvas").click()
        until("example saved", lambda: replaced(page)(driver))
        loaded()
        assert (config / "workflows" / "order-status.yaml").read_text() == example
        shot("35-canvas-example")

        # The loader reads workflows at start: restart, then a signed message is answered by the saved workflow.
        svc.stop()
        svc.start()
        body, headers = signed_generic_request(message("evt-canvas", "hello there"))
        assert svc.post("/api/im/callback", body, headers).status_code == 200
        reply = wait_until(lambda: receiver.for_event("evt-canvas"), 120, "the workflow's answer")[0]
        assert reply["text"] == ANSWER
    finally:
        svc.stop()
        receiver.close()
        print(f"screenshots: {screens}")
