"""Issue 9: internal secrets rotate with no failed request. The real service (Redis store behind an ACL password),
a client that keeps sending signed webhooks and admin calls throughout, `ai-assistant rotate-secrets` for the tokens,
and the Redis ACL's two-password window for the store's password (the step the redis role performs on a host)."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.helpers import (
    ServiceProcess,
    free_port,
    message,
    signed_generic_request,
    venv_bin,
    wait_until,
    write_config,
)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[int, str, str]]:
    """redis-server with an admin user and a least-privilege `assistant` user (keys aia:* only)."""
    port, admin, old = free_port(), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {tmp_path}\n'
        f"user default off\nuser admin on >{admin} ~* &* +@all\n"
        f"user assistant on >{old} ~aia:* +@all -@dangerous\n"
    )
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, username="admin", password=admin)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(pings, 10, "redis-server")
    yield port, admin, old
    proc.terminate()
    proc.wait(10)


class Client(threading.Thread):
    """Sends a signed webhook and an admin call every 20 ms with the admin token it currently holds."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.sent = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                self.sent += 1
                body, headers = signed_generic_request(message(f"rot-{self.sent}"))
                r = http.post(self.base + "/api/im/callback", content=body, headers=headers)
                if r.status_code != 200:
                    self.failures.append(f"webhook {r.status_code} {r.text[:100]}")
                r = http.get(self.base + "/admin/status", headers={"authorization": f"Bearer {self.token}"})
                if r.status_code != 200:
                    self.failures.append(f"admin {r.status_code} {r.text[:100]}")
                time.sleep(0.02)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def test_rotation_fails_no_request(tmp_path: Path, acl_redis: tuple[int, str, str]) -> None:
    port, admin_password, old_password = acl_redis
    data = tmp_path / "data"
    data.mkdir()
    secrets_file = data / "secrets.env"
    old_token = secrets.token_urlsafe(32)
    secrets_file.write_text(
        f"AI_ASSISTANT_ADMIN__TOKEN={old_token}\n"
        f"AI_ASSISTANT_ALERTS__TOKEN={secrets.token_urlsafe(32)}\n"
        f"AI_ASSISTANT_STORE__REDIS_URL=redis://assistant:{old_password}@127.0.0.1:{port}/0\n"
    )
    secrets_file.chmod(0o600)
    config = write_config(
        tmp_path / "config",
        reply_url="http://127.0.0.1:9/replies",
        engine_url="http://127.0.0.1:9/v1",
        assistant={
            "store": {"backend": "redis"},
            "worker": {"enabled": False},
            "alerts": {"connector": "im-connector", "chat_id": "ops"},
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_ASSISTANT_")}
    svc = ServiceProcess(config, data, env=env)
    svc.env = env
    svc.start()
    client = Client(svc.base, old_token)
    client.start()
    rotate = [venv_bin("ai-assistant"), "rotate-secrets", "--config-dir", str(config), "--data-dir", str(data)]
    try:
        time.sleep(0.5)
        # Step 1 for Redis (what the redis role does): accept a new password next to the old one, hand it over.
        new_password = secrets.token_urlsafe(16)
        admin = redis.Redis(port=port, username="admin", password=admin_password)
        admin.acl_setuser("assistant", enabled=True, passwords=[f"+{new_password}"])
        values = read_env(secrets_file)
        values["AI_ASSISTANT_STORE__REDIS_URL"] = f"redis://assistant:{new_password}@127.0.0.1:{port}/0"
        secrets_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        # Step 1 for the tokens: the documented command (it also makes the service reload).
        started = subprocess.run(rotate, capture_output=True, text=True, env=env, timeout=60)
        assert started.returncode == 0, started.stderr
        assert "running service reloaded" in started.stdout
        new_token = read_env(secrets_file)["AI_ASSISTANT_ADMIN__TOKEN"]
        assert new_token != old_token
        time.sleep(0.5)
        client.token = new_token  # the operator hands out the new token
        time.sleep(0.5)
        # Step 2: drop the old values everywhere.
        finished = subprocess.run([*rotate, "--finish"], capture_output=True, text=True, env=env, timeout=60)
        assert finished.returncode == 0, finished.stderr
        admin.acl_setuser("assistant", enabled=True, passwords=[f"-{old_password}"])
        time.sleep(0.5)
        sent_during_rotation = client.sent
    finally:
        client.stop.set()
        client.join(10)
    try:
        assert client.failures == [], client.failures[:5]
        assert sent_during_rotation > 20
        old = httpx.get(svc.base + "/admin/status", headers={"authorization": f"Bearer {old_token}"}, timeout=5)
        assert old.status_code == 401, "the old token is refused once the rotation is finished"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, username="assistant", password=old_password).ping()
        body, headers = signed_generic_request(message("after-rotation"))
        assert svc.post("/api/im/callback", body, headers).status_code == 200, "new Redis connections authenticate"
        assert "AI_ASSISTANT_ADMIN__PREVIOUS_TOKEN" not in read_env(secrets_file)
        assert old_token not in svc.log.read_text() and new_token not in svc.log.read_text()
    finally:
        svc.stop()


def test_rotation_refuses_a_second_start_and_a_finish_without_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets.env").write_text("AI_ASSISTANT_ADMIN__TOKEN=abcdefabcdefabcdef\n")
    cmd = [venv_bin("ai-assistant"), "rotate-secrets", "--data-dir", str(data)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_ASSISTANT_")}
    finish = subprocess.run([*cmd, "--finish"], capture_output=True, text=True, env=env, timeout=60)
    assert finish.returncode == 2 and "no rotation in progress" in finish.stderr
    assert subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60).returncode == 0
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 2 and "finish it first" in again.stderr
    assert (data / "secrets.env").stat().st_mode & 0o777 == 0o600


def test_rotation_without_a_secrets_file_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_ASSISTANT_")}
    result = subprocess.run(
        [venv_bin("ai-assistant"), "rotate-secrets", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "secrets.env: not found" in result.stderr
