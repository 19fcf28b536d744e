"""The console through the real app (create_app) in-process with TestClient, real SQLite files in tmp_path."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ai_assistant.app import create_app
from ai_assistant.console.store import ConsoleStore
from ai_assistant.settings import load_settings
from tests.helpers import venv_bin, write_config

ADMIN_PASSWORD = "correct horse battery staple"  # pragma: allowlist secret
VIEWER_PASSWORD = "viewer password 12345"  # pragma: allowlist secret
# base64("new-secret-of-thirty-two-bytes!!"): the webhook secret of connectors the tests add
NEW_SECRET = "whsec_" + "bmV3LXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzISE="  # pragma: allowlist secret
# Accounts of the browser tests, created with the real CLI.
ADMIN, VIEWER = ("alice", "admin password 123"), ("victor", "viewer password 123")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(page: httpx.Response) -> str:
    found = TOKEN.search(page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


def add_users(data_dir: Path) -> None:
    store = ConsoleStore.in_data_dir(data_dir)
    store.set_user("alice", "admin", ADMIN_PASSWORD)
    store.set_user("victor", "viewer", VIEWER_PASSWORD)
    store.close()


@dataclass
class Console:
    client: TestClient
    config_dir: Path
    data_dir: Path

    def login(self, name: str = "alice", password: str = ADMIN_PASSWORD) -> httpx.Response:
        token = csrf(self.client.get("/admin/login"))
        return self.client.post(
            "/admin/login", data={"name": name, "password": password, "csrf_token": token}, follow_redirects=False
        )

    def post(self, path: str, data: dict[str, Any] | None = None, page: str = "/admin/connectors") -> httpx.Response:
        token = csrf(self.client.get(page))
        return self.client.post(path, data={**(data or {}), "csrf_token": token}, follow_redirects=False)

    def connectors_yaml(self) -> str:
        return (self.config_dir / "connectors.yaml").read_text()


@contextlib.contextmanager
def make_console(
    tmp_path: Path, console_settings: dict[str, Any] | None = None, assistant: dict[str, Any] | None = None
) -> Iterator[Console]:
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        assistant={"worker": {"enabled": False}, "console": console_settings or {}, **(assistant or {})},
    )
    data = tmp_path / "data"
    add_users(data)
    app = create_app(load_settings(config, data))
    with TestClient(app) as client:
        yield Console(client, config, data)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with make_console(tmp_path) as made:
        yield made


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromium-driver are not installed (scripts/apt-packages.txt lists them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


REPO = Path(__file__).resolve().parents[2]
PHONE = (390, 844)


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where a browser test's screenshots go: build/test-logs/console-screens/<test>/, emptied first, so that a CI
    run keeps them as an artefact and a person can look at every page (each at a laptop and a phone width)."""
    folder = REPO / "build" / "test-logs" / "console-screens" / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder
    print(f"\n[console screenshots in {folder}]")


def replaced(page: Any) -> Any:
    """A WebDriverWait condition: `page` (the old <html>) is gone. Selenium's staleness_of only expects its stale
    exception, but chromium also answers "Node with given id does not belong to the document" while the new page is
    being swapped in; both mean the old page is gone."""
    from selenium.common.exceptions import WebDriverException

    def check(_: Any) -> bool:
        try:
            page.is_enabled()
        except WebDriverException:
            return True
        return False

    return check


def shoot(driver: Any, folder: Path, name: str) -> None:
    """<name>.png at the window's size and <name>-phone.png at a phone's, then the window as it was."""
    driver.save_screenshot(str(folder / f"{name}.png"))
    size = driver.get_window_size()
    driver.set_window_size(*PHONE)
    driver.save_screenshot(str(folder / f"{name}-phone.png"))
    driver.set_window_size(size["width"], size["height"])


def create_user(data_dir: Path, name: str, password: str, role: str) -> None:
    cmd = [venv_bin("ai-assistant"), "admin", "create-user", name, f"--role={role}", f"--data-dir={data_dir}"]
    subprocess.run(
        [*cmd, "--password-stdin"],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
