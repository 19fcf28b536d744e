"""Overview, connectors and audit pages: what they show, what a change writes, and every refused input."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from ai_assistant.console.store import ConsoleStore
from ai_assistant.localsecrets import read_env_file
from tests.console.conftest import NEW_SECRET, Console
from tests.helpers import SECRET

NEW = {
    "platform": "generic_im",
    "name": "team-b",
    "app_id": "team-b",
    "app_secret": NEW_SECRET,
    "webhook_url": "https://assistant.example/api/im/team-b",
    "bot_name": "助理B",
    "reply_url": "http://127.0.0.1:9/replies-b",
    "group_mention_only": "on",
}


def audit(console: Console) -> list[dict[str, object]]:
    return [e.as_dict() for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()]


def test_overview_shows_health_queue_and_answer_metrics(console: Console) -> None:
    console.login()
    page = console.client.get("/admin/overview")
    assert page.status_code == 200
    # The engine URL in the test config points at a closed port: the page must say so, as /readyz does.
    readyz = console.client.get("/readyz").json()["checks"]
    assert readyz == {"store": "ok", "engine": "unavailable"}
    assert '<td>store</td><td class="ok">ok</td>' in page.text
    assert '<td>engine</td><td class="bad">unavailable</td>' in page.text
    assert 'id="queue-depth">0<' in page.text
    assert 'id="answers-per-minute">' in page.text and 'id="latency">' in page.text


def test_latency_quantiles_follow_the_histogram() -> None:
    from ai_assistant import observability
    from ai_assistant.console.overview import latency_quantiles

    before = latency_quantiles() or {}
    series = observability.ANSWER_DURATION.labels(connector="quantile-test")
    for _ in range(200):
        series.observe(0.3)  # all in the 0.25..0.5 bucket
    found = latency_quantiles()
    assert found is not None
    if not before:  # only this test's samples in the registry: exact interpolation inside the bucket
        assert 0.25 < found[0.5] <= 0.5 and 0.25 < found[0.99] <= 0.5


def test_answers_per_minute_is_the_increase_between_views() -> None:
    from ai_assistant import observability
    from ai_assistant.console.overview import AnswerRate

    rate = AnswerRate()
    first = rate.observe(now=1_000.0)
    assert first.window_seconds is None  # no earlier view yet: the average since the process started
    observability.ANSWERS.labels(connector="rate-test", outcome="answered").inc(3)
    later = rate.observe(now=1_060.0)
    assert later.window_seconds == 60 and later.per_minute == pytest.approx(3.0)
    assert rate.observe(now=1_000.0 + 700).window_seconds is None  # samples older than the window are dropped


def test_add_connector_writes_file_secrets_backup_and_audit(console: Console) -> None:
    console.login()
    resp = console.post("/admin/connectors/new", NEW)
    assert resp.status_code == 303, resp.text
    written = yaml.safe_load(console.connectors_yaml())
    entry = written["team-b"]
    assert entry["app_secret"] == "${AI_ASSISTANT_CONSOLE_TEAM_B_APP_SECRET}"  # a reference, never the value
    assert NEW_SECRET not in console.connectors_yaml()
    assert read_env_file(console.data_dir / "secrets.env")["AI_ASSISTANT_CONSOLE_TEAM_B_APP_SECRET"] == NEW_SECRET
    assert entry["bot_name"] == "助理B" and entry["group_mention_only"] is True
    assert written["im-connector"]["app_secret"] == SECRET  # the other connector is untouched
    assert len(list((console.data_dir / "console" / "backups").iterdir())) == 1
    assert resp.headers["location"] == "/admin/connectors?saved=live"
    listing = console.client.get(resp.headers["location"])
    assert "team-b" in listing.text and "applied to the running service" in listing.text
    assert 'id="pending"' not in listing.text and "not yet in the running service" not in listing.text
    assert NEW_SECRET not in listing.text
    entry_log = audit(console)[0]
    assert entry_log["action"] == "connector.add" and entry_log["actor"] == "alice"
    assert entry_log["after"]["app_secret"] == "***"  # type: ignore[index]
    assert NEW_SECRET not in json.dumps(audit(console))
    # The file the console wrote is one the service itself accepts.
    from ai_assistant.connectors.loader import load_connectors
    from ai_assistant.plugins.loader import registry_with_plugins
    from ai_assistant.settings import load_settings

    settings = load_settings(console.config_dir, console.data_dir)
    os.environ["AI_ASSISTANT_CONSOLE_TEAM_B_APP_SECRET"] = NEW_SECRET
    assert set(load_connectors(settings, registry_with_plugins(console.config_dir, console.data_dir))) == {
        "im-connector",
        "team-b",
    }


def test_edit_keeps_a_secret_left_empty_and_never_shows_it(console: Console) -> None:
    console.login()
    form = console.client.get("/admin/connectors/im-connector/edit")
    assert form.status_code == 200 and SECRET not in form.text and 'placeholder="set"' in form.text
    resp = console.post(
        "/admin/connectors/im-connector/edit",
        {"app_id": "renamed", "app_secret": "", "reply_url": "http://127.0.0.1:9/r2", "webhook_url": "/api/im/cb"},
    )
    assert resp.status_code == 303, resp.text
    entry = yaml.safe_load(console.connectors_yaml())["im-connector"]
    assert entry["app_id"] == "renamed" and entry["app_secret"] == SECRET
    logged = audit(console)[0]
    assert logged["before"]["app_id"] == "test" and logged["after"]["app_id"] == "renamed"  # type: ignore[index]
    assert logged["before"]["app_secret"] == "***" and "replaced_secrets" not in logged["after"]  # type: ignore[index,operator]


def test_checkbox_defaults_survive_the_form(console: Console) -> None:
    """A key the file leaves out has the model's default: the form must show it, or saving would flip it."""
    console.login()
    assert 'name="group_mention_only" checked' in console.client.get("/admin/connectors/new?platform=generic_im").text
    edit = console.client.get("/admin/connectors/im-connector/edit")
    assert "group_mention_only" not in console.connectors_yaml() and 'name="group_mention_only" checked' in edit.text
    assert console.client.get("/admin/connectors/new?platform=carrier-pigeon").status_code == 404
    assert console.client.get("/admin/connectors/nope/edit").status_code == 404


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"name": "Bad Name!"}, "name", "lower-case letters"),
        ({"name": "im-connector"}, "name", "already exists"),
        ({"reply_url": ""}, "reply_url", "required"),
        ({"app_secret": "not-a-whsec"}, "app_secret", "whsec_"),  # pragma: allowlist secret
        ({"app_secret": "your_app_secret"}, "app_secret", "placeholder"),  # pragma: allowlist secret
        ({"webhook_url": "https://x.example/api/im/callback"}, "webhook_url", "already used by im-connector"),
        ({"allowed_cidrs": "10.0.0.0/8, not-a-network"}, "allowed_cidrs", "network"),
        ({"platform": "carrier-pigeon"}, "platform", "unknown platform"),
    ],
)
def test_invalid_connector_fields_are_shown_next_to_the_field_and_nothing_changes(
    console: Console, change: dict[str, str], field: str, problem: str
) -> None:
    console.login()
    before = console.connectors_yaml()
    resp = console.post("/admin/connectors/new", {**NEW, **change})
    assert resp.status_code in (400, 404)
    if resp.status_code == 400:
        assert f'id="error-{field}">' in resp.text
        shown = resp.text.split(f'id="error-{field}">', 1)[1].split("<", 1)[0]
        assert problem.lower() in shown.lower(), shown
        assert "Nothing was saved" in resp.text
    assert console.connectors_yaml() == before
    assert not (console.data_dir / "console" / "backups").exists()
    assert "AI_ASSISTANT_CONSOLE_TEAM_B_APP_SECRET" not in read_env_file(console.data_dir / "secrets.env")
    assert [e["action"] for e in audit(console)] == ["sign_in"]


def test_disable_enable_delete_and_the_last_connector_stays(console: Console) -> None:
    console.login()
    assert console.post("/admin/connectors/new", NEW).status_code == 303
    assert console.post("/admin/connectors/team-b/disable").status_code == 303
    assert "team-b" not in yaml.safe_load(console.connectors_yaml())
    parked = yaml.safe_load((console.data_dir / "console" / "disabled-connectors.yaml").read_text())
    assert parked["team-b"]["app_id"] == "team-b"
    assert console.post("/admin/connectors/team-b/enable").status_code == 303
    assert "team-b" in yaml.safe_load(console.connectors_yaml())
    assert console.post("/admin/connectors/team-b/delete").status_code == 303
    assert console.post("/admin/connectors/im-connector/disable").status_code == 409  # the service needs one
    refused = console.post("/admin/connectors/im-connector/delete")
    assert refused.status_code == 409 and "at least one enabled connector" in refused.text
    assert list(yaml.safe_load(console.connectors_yaml())) == ["im-connector"]
    assert console.post("/admin/connectors/nope/delete").status_code == 404
    actions = [e["action"] for e in audit(console)]
    assert actions[:4] == ["connector.delete", "connector.enable", "connector.disable", "connector.add"]


def test_a_read_only_connectors_file_is_reported_not_half_written(console: Console) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes a read-only file anyway; the service runs as its own user (see docs/console.md)")
    console.login()
    (console.config_dir / "connectors.yaml").chmod(0o440)
    resp = console.post("/admin/connectors/new", NEW)
    assert resp.status_code == 400 and "read-only" in resp.text


def test_audit_page_and_exports(console: Console) -> None:
    console.login()
    console.post("/admin/connectors/new", NEW)
    page = console.client.get("/admin/audit")
    assert page.status_code == 200 and "connector.add" in page.text and NEW_SECRET not in page.text
    as_json = console.client.get("/admin/audit.json")
    assert "attachment" in as_json.headers["content-disposition"]
    assert [e["action"] for e in as_json.json()] == ["connector.add", "sign_in"]
    as_csv = console.client.get("/admin/audit.csv")
    lines = as_csv.text.splitlines()
    assert lines[0] == "id,at,actor,action,target,before,after" and "connector.add" in lines[1]
    assert NEW_SECRET not in as_csv.text and as_csv.headers["content-type"].startswith("text/csv")


def test_the_deploy_gates_probe_connector_is_neither_listed_nor_offered_nor_changed(console: Console) -> None:
    """roles/assistant writes a `probe` connector for the deploy gate (ADR 0046): it is the roles', not the
    operators'. The console keeps it in the file untouched through other changes but never shows or changes it."""
    path = console.config_dir / "connectors.yaml"
    entries = yaml.safe_load(path.read_text())
    entries["deploy_probe"] = {
        "platform": "probe",
        "app_secret": NEW_SECRET,
        "webhook_url": "http://127.0.0.1/_deploy/probe",
        "allowed_cidrs": ["127.0.0.1/32", "::1/128"],
        "bot_name": "deploy probe",
    }  # as roles/assistant/vars/main.yml writes it
    path.write_text(yaml.safe_dump(entries))
    console.login()
    page = console.client.get("/admin/connectors").text
    assert "im-connector" in page and "deploy_probe" not in page and 'value="probe"' not in page
    assert console.client.get("/admin/connectors/new?platform=probe").status_code == 404
    assert console.client.get("/admin/connectors/deploy_probe/edit").status_code == 404
    for action in ("edit", "disable", "delete"):
        assert console.post(f"/admin/connectors/deploy_probe/{action}").status_code == 404, action
    refused = console.post("/admin/connectors/new", {**NEW, "platform": "probe", "name": "mine"})
    assert refused.status_code == 404 and "mine" not in yaml.safe_load(path.read_text())
    assert console.post("/admin/connectors/new", NEW).status_code == 303
    after = yaml.safe_load(path.read_text())
    assert after["deploy_probe"] == entries["deploy_probe"] and "team-b" in after
