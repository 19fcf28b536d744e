"""The connectors page's test button: the doctor's platform probe on the connector as saved, over real loopback HTTP.
The only stand-in is the generic IM's receiving side (ReplyReceiver), as everywhere in the tests."""

from __future__ import annotations

import yaml

from ai_assistant.console.store import ConsoleStore
from tests.console.conftest import NEW_SECRET, VIEWER_PASSWORD, Console
from tests.helpers import ReplyReceiver


def audit_actions(console: Console) -> list[str]:
    return [e.action for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()]


def test_a_reachable_connector_saved_in_the_console_passes(console: Console, receiver: ReplyReceiver) -> None:
    console.login()
    new = {
        "platform": "generic_im", "name": "team-b", "app_id": "team-b", "app_secret": NEW_SECRET,
        "webhook_url": "https://assistant.example/api/im/team-b", "bot_name": "B", "reply_url": receiver.url,
    }  # fmt: skip
    assert console.post("/admin/connectors/new", new).status_code == 303
    # Its secret is only in secrets.env (written by the save), not in this process's environment: the test reads it.
    page = console.post("/admin/connectors/team-b/test")
    assert page.status_code == 200, page.text
    assert 'class="notice ok" id="test-result"' in page.text and "reply_url answers" in page.text
    assert 'value="https://assistant.example/api/im/team-b"' in page.text  # the callback URL to paste
    assert receiver.received == []  # nothing was sent to anyone
    assert "connector.test" in audit_actions(console)


def test_an_unreachable_platform_fails_with_the_reason(console: Console) -> None:
    console.login()
    page = console.post("/admin/connectors/im-connector/test")  # its reply_url is a closed loopback port
    assert page.status_code == 502 and "unreachable" in page.text and 'class="notice error"' in page.text


def test_a_connector_whose_secret_cannot_be_resolved_names_the_key(console: Console) -> None:
    path = console.config_dir / "connectors.yaml"
    entries = yaml.safe_load(path.read_text())
    entries["im-connector"]["app_secret"] = "${NOT_SET_ANYWHERE_FOR_THIS_TEST}"
    path.write_text(yaml.safe_dump(entries, allow_unicode=True))
    console.login()
    page = console.post("/admin/connectors/im-connector/test")
    assert page.status_code == 502
    assert "im-connector.app_secret: environment variable NOT_SET_ANYWHERE_FOR_THIS_TEST is not set" in page.text


def test_the_test_button_needs_csrf_an_admin_and_a_known_connector(console: Console) -> None:
    console.login()
    assert console.client.post("/admin/connectors/im-connector/test", data={"csrf_token": "x"}).status_code == 403
    assert console.post("/admin/connectors/nope/test").status_code == 404
    console.client.cookies.clear()
    console.login("victor", VIEWER_PASSWORD)
    assert 'id="test-im-connector"' not in console.client.get("/admin/connectors").text
    assert console.post("/admin/connectors/im-connector/test").status_code == 403
    assert "connector.test" not in audit_actions(console)
