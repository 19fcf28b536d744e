"""Fixtures for the IM connector tests: the platform API stand-in, and the real app served by uvicorn on loopback
with the connector under test, a real SQLite store and (when answers are needed) the real embedded model."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from ai_assistant.app import create_app
from ai_assistant.connectors.dingtalk import DingTalkConnector
from ai_assistant.connectors.feishu import FeishuConnector, LarkConnector
from ai_assistant.connectors.slack import SlackConnector
from ai_assistant.connectors.telegram import TelegramConnector
from ai_assistant.connectors.wecom import WeComConnector
from ai_assistant.registry import Kind, Registry, default_registry
from ai_assistant.settings import Settings, load_settings
from tests.connectors.producers import Req
from tests.connectors.standin import PlatformStandIn
from tests.helpers import free_port, metric_value, queued_jobs, wait_until

CONNECTORS = {
    "feishu": FeishuConnector,
    "lark": LarkConnector,
    "dingtalk": DingTalkConnector,
    "wecom": WeComConnector,
    "slack": SlackConnector,
    "telegram": TelegramConnector,
}


def registry() -> Registry:
    """The default registry plus our connectors, registered the way their pyproject entry points will."""
    reg = default_registry()
    for name, cls in CONNECTORS.items():
        reg.register(Kind.CONNECTOR, name, cls)
    return reg


class RunningApp:
    """create_app(...) served by uvicorn in a thread on a free loopback port: real HTTP, real lifespan."""

    def __init__(self, config_dir: Path, data_dir: Path, *, workers: bool) -> None:
        self.data_dir = data_dir
        self.settings = load_settings(config_dir, data_dir)
        worker = self.settings.worker.model_copy(update={"enabled": workers})
        self.settings = self.settings.model_copy(update={"worker": worker})
        self.app = create_app(self.settings, registry())
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            # proxy_headers=False: X-Forwarded-For is the edge's business (server.trusted_proxies). uvicorn's default
            # would already rewrite the client address for any peer on 127.0.0.1.
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", proxy_headers=False
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=self.base, timeout=10)

    @property
    def connector(self) -> Any:
        return next(iter(self.app.state.parts.connectors.values()))

    def start(self) -> RunningApp:
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "app on loopback")
        return self

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)

    def send(self, req: Req, **kw: Any) -> httpx.Response:
        return self.client.request(req.method, req.url(), content=req.body, headers=req.headers, **kw)

    def jobs(self) -> list[tuple[str, str, int]]:
        return queued_jobs(self.data_dir)

    def messages(self) -> list[dict[str, Any]]:
        """The queued InboundMessages as stored in the SQLite file."""
        db = self.data_dir / "state.sqlite3"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            return [json.loads(m) for (m,) in conn.execute("SELECT message FROM jobs ORDER BY rowid")]

    def metric(self, name: str, **labels: str) -> float:
        """A sample read through the app's real /metrics endpoint (counters are process-wide: compare deltas)."""
        text = self.client.get("/metrics/", follow_redirects=True).text
        return metric_value(text, name, labels)


AppFactory = Callable[..., RunningApp]


@pytest.fixture(scope="session")
def standin() -> Iterator[PlatformStandIn]:
    s = PlatformStandIn().start()
    yield s
    s.stop()


@pytest.fixture
def platform(standin: PlatformStandIn) -> PlatformStandIn:
    standin.reset()
    return standin


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """make_app(connector_options, engine_url=None, workers=False, assistant={}) -> a started RunningApp."""
    started: list[RunningApp] = []

    def factory(
        options: dict[str, Any], *, engine_url: str | None = None, workers: bool = False, **assistant: Any
    ) -> RunningApp:
        n = len(started)
        config_dir, data_dir = tmp_path / f"config{n}", tmp_path / f"data{n}"
        config_dir.mkdir()
        settings: dict[str, Any] = {
            "engine": {
                "base_url": engine_url or "http://127.0.0.1:9/v1",  # discard port: never called without workers
                "model": "local",
                "max_tokens": 16,
                "timeout_seconds": 60,
                "max_retries": 1,
            },
            "worker": {"poll_interval_seconds": 0.05, "retry_backoff_seconds": 0.2, "concurrency": 1},
            "server": {"json_logs": False},
        }
        if "knowledge" in Settings.model_fields:
            # These tests are about the connectors: no knowledge base, so every answer comes from the model.
            settings["knowledge"] = {"enabled": False}
        settings.update(assistant)
        (config_dir / "assistant.yaml").write_text(yaml.safe_dump(settings))
        (config_dir / "connectors.yaml").write_text(yaml.safe_dump({"bot": options}, allow_unicode=True))
        (config_dir / "sensitive_words.txt").write_text("forbiddenword\n")
        app = RunningApp(config_dir, data_dir, workers=workers).start()
        started.append(app)
        return app

    yield factory
    for app in started:
        app.stop()
