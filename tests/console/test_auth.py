"""Sign-in, sessions, CSRF, lock-out, rate limit and roles: every refusal changes nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ai_assistant.console.store import ConsoleStore
from tests.console.conftest import ADMIN_PASSWORD, VIEWER_PASSWORD, Console, csrf, make_console
from tests.helpers import venv_bin, wait_until


def test_sign_in_sets_a_strict_httponly_session_cookie(console: Console) -> None:
    resp = console.login()
    assert resp.status_code == 303 and resp.headers["location"] == "/admin/overview"
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("aia_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain HTTP from a client that is not a trusted proxy
    page = console.client.get("/admin/overview")
    assert page.status_code == 200 and 'id="user">alice<' in page.text


def test_secure_cookie_behind_a_trusted_tls_proxy(console: Console) -> None:
    # TestClient's peer is "testclient", not an address: it is no trusted proxy, so the header is not believed.
    token = csrf(console.client.get("/admin/login"))
    resp = console.client.post(
        "/admin/login",
        data={"name": "alice", "password": ADMIN_PASSWORD, "csrf_token": token},
        headers={"x-forwarded-proto": "https"},
        follow_redirects=False,
    )
    assert "Secure" not in next(c for c in resp.headers.get_list("set-cookie") if c.startswith("aia_session="))
    console.client.cookies.clear()
    resp = console.client.get("https://testserver/admin/login")  # the request itself came over TLS
    assert "Secure" in resp.headers["set-cookie"]


def test_wrong_password_and_unknown_user_are_refused_alike(console: Console) -> None:
    for name, password in (("alice", "wrong password!"), ("nobody", ADMIN_PASSWORD)):
        resp = console.login(name, password)
        assert resp.status_code == 401
        assert "Wrong name or password." in resp.text
        assert "aia_session" not in resp.headers.get("set-cookie", "")
    assert console.client.get("/admin/overview", follow_redirects=False).headers["location"] == "/admin/login"


def test_pages_need_a_session(console: Console) -> None:
    for path in ("/admin/overview", "/admin/connectors", "/admin/audit", "/admin/audit.csv", "/admin/audit.json"):
        resp = console.client.get(path, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == "/admin/login", path


def test_login_without_or_with_a_forged_csrf_token_is_refused(console: Console) -> None:
    console.client.get("/admin/login")
    for token in (None, "forged", csrf(console.client.get("/admin/login"))[:-2] + "xx"):
        data = {"name": "alice", "password": ADMIN_PASSWORD, **({"csrf_token": token} if token else {})}
        resp = console.client.post("/admin/login", data=data, follow_redirects=False)
        assert resp.status_code == 403 and "security token" in resp.text
    assert ConsoleStore.in_data_dir(console.data_dir).audit_entries() == []  # not even an attempt was counted


def test_changes_without_csrf_token_or_with_another_sessions_token_change_nothing(console: Console) -> None:
    before = console.connectors_yaml()
    console.login()
    resp = console.client.post("/admin/connectors/im-connector/disable", data={}, follow_redirects=False)
    assert resp.status_code == 403 and "security token" in resp.text
    # A token minted for the pre-sign-in page (another session binding) does not work after sign-in either.
    console.client.post("/admin/logout", data={"csrf_token": csrf(console.client.get("/admin/overview"))})
    stale = csrf(console.client.get("/admin/login"))
    console.login()
    resp = console.client.post("/admin/connectors/im-connector/delete", data={"csrf_token": stale})
    assert resp.status_code == 403
    assert console.connectors_yaml() == before


def test_lock_out_after_repeated_failures_even_with_the_right_password(tmp_path: Path) -> None:
    with make_console(tmp_path, {"max_failed_logins": 3, "lockout_seconds": 2}) as console:
        for _ in range(2):
            assert console.login("alice", "wrong password!").status_code == 401
        third = console.login("alice", "wrong password!")
        assert third.status_code == 401 and "locked" in third.text
        locked = console.login("alice", ADMIN_PASSWORD)
        assert locked.status_code == 401 and "locked" in locked.text
        assert console.login("victor", VIEWER_PASSWORD).status_code == 303  # other accounts are unaffected
        wait_until(lambda: console.login().status_code == 303, 30, "the lock to expire", interval=0.5)
        actions = [e.action for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()]
        assert actions.count("sign_in_refused") >= 4


def test_sign_in_attempts_are_rate_limited_per_address(tmp_path: Path) -> None:
    with make_console(tmp_path, {"login_attempts_per_minute": 3, "max_failed_logins": 100}) as console:
        codes = [console.login("nobody", "wrong password!").status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        assert "Too many sign-in attempts" in console.login().text  # the right password waits too


def test_idle_session_expires(tmp_path: Path) -> None:
    with make_console(tmp_path, {"idle_timeout_seconds": 1}) as console:
        console.login()
        assert console.client.get("/admin/overview").status_code == 200
        time.sleep(2.2)  # the timeout itself is what is tested: more than 1 s without a request
        resp = console.client.get("/admin/overview", follow_redirects=False)
        assert resp.headers["location"] == "/admin/login?expired=1"
        assert "session has expired" in console.client.get(resp.headers["location"]).text
        assert console.client.get("/admin/overview", follow_redirects=False).headers["location"] == "/admin/login"
        console.client.cookies.clear()
        console.login("victor", VIEWER_PASSWORD)  # leaves its session idle, without signing out
        time.sleep(2.2)
        console.login()
        store = ConsoleStore.in_data_dir(console.data_dir)
        assert [row[0] for row in store._rows("SELECT user FROM sessions")] == ["alice"]  # the idle one is gone


def test_viewer_sees_pages_but_every_change_is_refused(console: Console) -> None:
    before = console.connectors_yaml()
    assert console.login("victor", VIEWER_PASSWORD).status_code == 303
    page = console.client.get("/admin/connectors")
    assert page.status_code == 200 and "im-connector" in page.text and "/disable" not in page.text
    new = {"platform": "generic_im", "name": "x", "app_id": "a", "reply_url": "http://127.0.0.1:9/r"}
    for path, data in (
        ("/admin/connectors/im-connector/disable", {}),
        ("/admin/connectors/im-connector/delete", {}),
        ("/admin/connectors/im-connector/edit", {"app_id": "changed", "reply_url": "http://127.0.0.1:9/r"}),
        ("/admin/connectors/new", new),
    ):
        resp = console.post(path, data)
        assert resp.status_code == 403 and "can view but not change" in resp.text, path
    assert console.connectors_yaml() == before
    assert [e.action for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()] == ["sign_in"]


def test_sign_out_ends_the_session(console: Console) -> None:
    console.login()
    session = console.client.cookies.get("aia_session")
    console.client.post("/admin/logout", data={"csrf_token": csrf(console.client.get("/admin/overview"))})
    console.client.cookies.set("aia_session", session or "", path="/admin")
    assert console.client.get("/admin/overview", follow_redirects=False).status_code == 303


def test_language_switch_and_no_open_redirect(console: Console) -> None:
    resp = console.client.get("/admin/lang/zh?next=/admin/login", follow_redirects=False)
    assert resp.headers["location"] == "/admin/login"
    assert "登录" in console.client.get("/admin/login").text
    for evil in ("https://evil.example/", "//evil.example/admin/", "/admin//evil.example"):
        assert console.client.get(f"/admin/lang/en?next={evil}", follow_redirects=False).headers["location"] == (
            "/admin/overview"
        )


@pytest.mark.parametrize(
    ("args", "stdin", "problem"),
    [
        (["alice", "--role", "root"], "a long enough password\n", "--role"),
        (["alice", "--role", "admin"], "short\n", "at least 12"),
        (["has space", "--role", "admin"], "a long enough password\n", "without spaces"),
    ],
)
def test_create_user_refuses_bad_input(tmp_path: Path, args: list[str], stdin: str, problem: str) -> None:
    cmd = [venv_bin("ai-assistant"), "admin", "create-user", *args, "--password-stdin", "--data-dir", str(tmp_path)]
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and problem in result.stderr
    assert not (tmp_path / "console.sqlite3").exists() or ConsoleStore(tmp_path / "console.sqlite3").users() == []


def test_create_user_stores_an_argon2_hash_and_audits(tmp_path: Path) -> None:
    cmd = [venv_bin("ai-assistant"), "admin", "create-user", "carol", "--role", "admin", "--password-stdin"]
    result = subprocess.run(
        [*cmd, "--data-dir", str(tmp_path)], input="a long enough password\n", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    store = ConsoleStore(tmp_path / "console.sqlite3")
    assert [(u.name, u.role) for u in store.users()] == [("carol", "admin")]
    digest = store._rows("SELECT password_hash FROM users")[0][0]
    assert digest.startswith("$argon2id$") and "a long enough password" not in digest
    assert store.authenticate("carol", "a long enough password", 5, 60).role == "admin"
    entry = store.audit_entries()[0]
    assert entry.action == "user.create" and entry.target == "carol" and entry.actor.startswith("cli:")
    assert (tmp_path / "console.sqlite3").stat().st_mode & 0o777 == 0o600


def test_secure_cookie_when_the_trusted_proxy_says_tls(tmp_path: Path) -> None:
    """The real process behind a loopback 'proxy': X-Forwarded-Proto is believed from server.trusted_proxies only."""
    import httpx

    from tests.console.conftest import add_users
    from tests.helpers import ServiceProcess, write_config

    def session_cookie(trusted: list[str]) -> str:
        config = write_config(
            tmp_path / f"config-{len(trusted)}",
            reply_url="http://127.0.0.1:9/replies",
            engine_url="http://127.0.0.1:9/v1",
            assistant={"worker": {"enabled": False}, "server": {"trusted_proxies": trusted}},
        )
        data = tmp_path / f"data-{len(trusted)}"
        add_users(data)
        svc = ServiceProcess(config, data).start()
        try:
            # The browser is on TLS at the proxy: it would send a Secure cookie, which httpx on plain HTTP does not.
            page = httpx.get(svc.base + "/admin/login", headers={"x-forwarded-proto": "https"})
            form = {"name": "alice", "password": ADMIN_PASSWORD, "csrf_token": csrf(page)}
            cookie = {"x-forwarded-proto": "https", "cookie": f"aia_csrf={page.cookies['aia_csrf']}"}
            resp = httpx.post(svc.base + "/admin/login", data=form, headers=cookie)
            assert resp.status_code == 303, resp.text
            return next(c for c in resp.headers.get_list("set-cookie") if c.startswith("aia_session="))
        finally:
            svc.stop()

    assert "Secure" in session_cookie(["127.0.0.1/32"])
    assert "Secure" not in session_cookie([])


def test_rate_limit_counts_the_real_client_behind_the_trusted_proxy(tmp_path: Path) -> None:
    import httpx

    from tests.console.conftest import add_users
    from tests.helpers import ServiceProcess, write_config

    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        assistant={
            "worker": {"enabled": False},
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "console": {"login_attempts_per_minute": 2, "max_failed_logins": 100},
        },
    )
    add_users(tmp_path / "data")
    svc = ServiceProcess(config, tmp_path / "data").start()
    try:
        # Generous: each attempt hashes with argon2 in the service, which took over httpx's default 5 s on a loaded
        # two-core machine (load average 16).
        with httpx.Client(base_url=svc.base, timeout=60) as client:
            token = csrf(client.get("/admin/login"))

            def attempt(client_ip: str) -> int:
                wrong = "wrong password!"  # pragma: allowlist secret
                form = {"name": "nobody", "password": wrong, "csrf_token": token}
                return client.post("/admin/login", data=form, headers={"x-forwarded-for": client_ip}).status_code

            assert [attempt("203.0.113.7") for _ in range(3)] == [401, 401, 429]
            assert attempt("198.51.100.9") == 401  # another client behind the same proxy has its own budget
    finally:
        svc.stop()
