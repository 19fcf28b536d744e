"""Install -> list -> disable -> enable -> upgrade -> remove, through the real CLI, from a file URL and over real HTTPS,
and the loader registering what is installed into the one Registry."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_assistant.connectors.base import Connector
from ai_assistant.errors import SignatureInvalid
from ai_assistant.messages import RawRequest
from ai_assistant.plugins import load_archive_plugins, load_plugin_settings
from ai_assistant.plugins.cli import plugin_app
from ai_assistant.registry import Kind, Registry

from .conftest import REPO, Env, HttpsServer

runner = CliRunner()


def cli(env: Env, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        plugin_app,
        ["--config-dir", str(env.config_dir), "--data-dir", str(env.data_dir), *args],
        catch_exceptions=False,
    )
    return result.exit_code, result.output


def listed(env: Env) -> list[dict[str, object]]:
    code, out = cli(env, "list", "--json")
    assert code == 0, out
    return list(json.loads(out))


def load(env: Env) -> Registry:
    registry = Registry()
    load_archive_plugins(registry, env.data_dir, load_plugin_settings(env.config_dir))
    return registry


def test_round_trip_install_list_disable_enable_upgrade_remove(env: Env) -> None:
    v1 = env.archive(env.source("1.0.0"))
    sha = hashlib.sha256(v1.read_bytes()).hexdigest()
    code, out = cli(
        env, "install", "--type", "connector", "--name", "im-connector", "--url", v1.as_uri(), "--sha256", sha
    )
    assert code == 0, out
    assert "installed im-connector 1.0.0" in out
    assert "signed by test-publisher" in out
    assert "permissions: network, secrets, messages" in out

    [row] = listed(env)
    assert (row["name"], row["type"], row["version"], row["status"]) == (
        "im-connector",
        "connector",
        "1.0.0",
        "enabled",
    )
    assert row["source"] == v1.as_uri()
    assert row["archive_sha256"] == sha
    assert row["signer"] == "test-publisher"
    code, table = cli(env, "list")
    assert code == 0
    assert "im-connector" in table
    assert "test-publisher" in table
    assert "enabled" in table

    registry = load(env)
    entry = registry.entries[(Kind.CONNECTOR, "im-connector")]
    assert entry.source == "plugin:im-connector"
    assert not registry.problems
    assert issubclass(entry.factory, Connector)

    assert cli(env, "disable", "im-connector")[0] == 0
    assert listed(env)[0]["status"] == "disabled"
    assert (Kind.CONNECTOR, "im-connector") not in load(env).entries
    assert cli(env, "enable", "im-connector")[0] == 0
    assert listed(env)[0]["status"] == "enabled"

    # Upgrade from the recorded URL: the publisher replaced the file there with 1.1.0.
    old_dir = env.data_dir / "plugins" / "installed" / str(row["directory"])
    shutil.copyfile(env.archive(env.source("1.1.0")), v1)
    code, out = cli(env, "upgrade", "im-connector")
    assert code == 0, out
    [row2] = listed(env)
    assert row2["version"] == "1.1.0"
    assert row2["status"] == "enabled"
    assert not old_dir.exists()
    assert sorted(p.name for p in (env.data_dir / "plugins" / "installed").iterdir()) == [row2["directory"]]

    code, out = cli(env, "remove", "im-connector")
    assert code == 0
    assert "removed im-connector 1.1.0" in out
    assert listed(env) == []
    assert list((env.data_dir / "plugins" / "installed").iterdir()) == []
    assert cli(env, "list")[1].strip() == "no plugins installed"


def test_loaded_plugin_is_a_working_connector(env: Env) -> None:
    """The example connector, installed from its archive, verifies a real HMAC-signed request, refuses a forged one."""
    env.manager().install(env.archive().as_uri(), "connector", "im-connector")
    factory = load(env).get(Kind.CONNECTOR, "im-connector")
    secret = "s3cr3t-of-sixteen-plus"
    connector = factory("im", factory.Config(secret=secret, reply_url="http://127.0.0.1:9/"))
    body = json.dumps({"event_id": "e1", "chat_id": "c1", "user_id": "u1", "text": "hi"}).encode()
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    verdict = asyncio.run(
        connector.verify(RawRequest("POST", "/im", {"x-im-timestamp": ts, "x-im-signature": sig}, {}, body))
    )
    assert [m.text for m in verdict.messages] == ["hi"]
    forged = RawRequest("POST", "/im", {"x-im-timestamp": ts, "x-im-signature": "0" * 64}, {}, body)
    with pytest.raises(SignatureInvalid):
        asyncio.run(connector.verify(forged))


def test_install_over_https_with_the_ca_in_plugins_yaml(env: Env, https_server: HttpsServer) -> None:
    shutil.copyfile(env.archive(), https_server.root / "im.zip")
    url = f"{https_server.base_url}/im.zip"

    before = env.snapshot()
    code, out = cli(env, "install", "--type", "connector", "--name", "im-connector", "--url", url)
    assert code == 1
    assert "TLS certificate not trusted" in out
    assert env.snapshot() == before

    env.write_settings(ca_bundle=str(https_server.ca_pem))
    code, out = cli(env, "install", "--type", "connector", "--name", "im-connector", "--url", url)
    assert code == 0, out
    assert listed(env)[0]["source"] == url
    assert (Kind.CONNECTOR, "im-connector") in load(env).entries


def test_https_404_and_credentials_in_url_are_not_stored(env: Env, https_server: HttpsServer) -> None:
    env.write_settings(ca_bundle=str(https_server.ca_pem))
    code, out = cli(
        env, "install", "--type", "connector", "--name", "im-connector", "--url", https_server.base_url + "/x"
    )
    assert code == 1
    assert "HTTP 404" in out
    shutil.copyfile(env.archive(), https_server.root / "im.zip")
    url = https_server.base_url.replace("https://", "https://user:hunter2pass@") + "/im.zip?token=SIGNEDURLSECRET"
    code, out = cli(env, "install", "--type", "connector", "--name", "im-connector", "--url", url)
    assert code == 0, out
    state = (env.data_dir / "plugins" / "state.json").read_text()
    for secret in ("hunter2pass", "SIGNEDURLSECRET"):
        assert secret not in state
        assert secret not in out
        assert secret not in cli(env, "list")[1]
    code, out = cli(env, "upgrade", "im-connector")
    assert code == 1
    assert "give --url again" in out


def test_example_plugin_built_by_its_make_target_script(env: Env, https_server: HttpsServer, tmp_path: Path) -> None:
    """examples/plugins/build.py (what `make plugin-example` runs) makes a key and a signed zip that installs as is."""
    out_dir = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "plugins" / "build.py"), "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    public = (out_dir / "example-signing.pub").read_text().strip()
    assert public in proc.stdout
    assert os.stat(out_dir / "example-signing.key").st_mode & 0o077 == 0
    (env.config_dir / "plugins.yaml").write_text(
        f'trusted_keys:\n  - name: example\n    public_key: "{public}"\nca_bundle: {https_server.ca_pem}\n'
    )
    shutil.copyfile(out_dir / "im-connector.zip", https_server.root / "im.zip")
    code, out = cli(
        env, "install", "--type", "connector", "--name", "im-connector", "--url", https_server.base_url + "/im.zip"
    )
    assert code == 0, out
    assert "signed by example" in out
    code, out = cli(env, "remove", "im-connector")
    code, out = cli(
        env,
        "install",
        "--type",
        "connector",
        "--name",
        "im-connector",
        "--url",
        (out_dir / "im-connector.zip").as_uri(),
    )
    assert code == 0, out
    assert "signed by example" in out


def test_keygen_and_build_commands(env: Env, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "publisher.key"
    code, public = runner.invoke(plugin_app, ["keygen", "--out", str(key)]).exit_code, key
    assert code == 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    result = runner.invoke(plugin_app, ["keygen", "--out", str(key)])
    assert result.exit_code == 1
    assert "refusing to overwrite" in result.output
    result = runner.invoke(
        plugin_app, ["build", str(env.source("2.0.0")), "--out", str(tmp_path / "p.zip"), "--key", str(key)]
    )
    assert result.exit_code == 0, result.output
    assert "signed" in result.output
    assert public.exists()
    result = runner.invoke(plugin_app, ["build", str(tmp_path), "--out", str(tmp_path / "q.zip")])
    assert result.exit_code == 1
    assert "no plugin.toml here" in result.output


def test_redirects_must_stay_on_https(env: Env, https_server: HttpsServer) -> None:
    env.write_settings(ca_bundle=str(https_server.ca_pem))
    shutil.copyfile(env.archive(), https_server.root / "im.zip")
    to_http = f"{https_server.base_url}/redirect?to=http://127.0.0.1:9/im.zip"
    code, out = cli(env, "install", "--type", "connector", "--name", "im-connector", "--url", to_http)
    assert code == 1
    assert "redirected to a non-https URL; refused" in out
    to_https = f"{https_server.base_url}/redirect?to={https_server.base_url}/im.zip"
    code, out = cli(env, "install", "--type", "connector", "--name", "im-connector", "--url", to_https)
    assert code == 0, out


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("trusted_keys:\n  - name: x\n    public_key: abc\n", "plugins.yaml: trusted_keys.0.public_key: "),
        ('trusted_keys:\n  - name: x\n    public_key: "ed25519:AAAA"\n', "not a base64 ed25519 public key"),
        ("require_signatures: false\n", "plugins.yaml: require_signatures: unknown key"),
        ("max_ratio: 1\n", "plugins.yaml: max_ratio: "),
        ("ca_bundle: missing-ca.pem\n", "plugins.yaml: ca_bundle: "),
        ("- a list\n", "plugins.yaml: must be a mapping"),
        ("key: [unclosed\n", "plugins.yaml: line 2: not valid YAML"),
    ],
)
def test_bad_plugins_yaml_is_one_line_naming_file_and_key(env: Env, yaml_text: str, expected: str) -> None:
    (env.config_dir / "plugins.yaml").write_text(yaml_text)
    code, out = cli(env, "list")
    assert code == 1
    assert expected in out
    assert out.count("\n") == 1
    assert "Traceback" not in out


def test_same_key_twice_is_refused(env: Env) -> None:
    from ai_assistant.plugins.signing import public_key_text

    key = public_key_text(env.key)
    (env.config_dir / "plugins.yaml").write_text(
        f'trusted_keys:\n  - name: a\n    public_key: "{key}"\n  - name: b\n    public_key: "{key}"\n'
    )
    code, out = cli(env, "list")
    assert code == 1
    assert "trusted_keys: the same public key is listed twice" in out


def test_unreadable_plugin_is_reported_not_fatal(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.manager().install(env.archive().as_uri(), "connector", "im-connector")

    def denied(root: Path) -> None:
        raise PermissionError(13, "Permission denied", str(root))

    # Root reads everything, so the permission problem a service user would meet is raised where the tree is read.
    monkeypatch.setattr("ai_assistant.plugins.manager.list_tree", denied)
    assert [(c.status, "Permission denied" in c.detail) for c in env.manager().check_all()] == [("unreadable", True)]
    registry = load(env)
    assert not registry.entries
    assert any("im-connector (unreadable) skipped" in p for p in registry.problems)


def test_unusable_data_dir_is_one_line(env: Env) -> None:
    blocker = env.data_dir / "plugins"
    blocker.write_text("a file where the plugins directory should be")
    code, out = cli(env, "install", "--type", "connector", "--name", "im-connector", "--url", env.archive().as_uri())
    assert code == 1
    assert out.startswith("error: ")
    assert str(blocker) in out
    assert out.count("\n") == 1


def test_install_disabled(env: Env) -> None:
    code, out = cli(
        env, "install", "--type", "connector", "--name", "im-connector", "--url", env.archive().as_uri(), "--disabled"
    )
    assert code == 0, out
    assert "disabled (takes effect at the next start)" in out
    assert listed(env)[0]["status"] == "disabled"
    assert load(env).entries == {}
