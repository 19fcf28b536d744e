"""Fixtures for the plugin tests: signing keys, plugin sources and archives built by the real builder, a plugin
environment (config dir with plugins.yaml, data dir), and a real HTTPS server on loopback with a test CA (trustme)."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ai_assistant.plugins.archive import build
from ai_assistant.plugins.manager import PluginManager
from ai_assistant.plugins.settings import load_plugin_settings
from ai_assistant.plugins.signing import public_key_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "plugins" / "im-connector"


@pytest.fixture(autouse=True)
def _isolated_imports() -> Iterator[None]:
    """Plugins are imported into this process; forget them afterwards so every test loads its own copy. Only modules
    from directories a test added to sys.path are dropped: re-importing library modules would split their classes."""
    modules, path = set(sys.modules), list(sys.path)
    yield
    added = [p for p in sys.path if p not in path]
    for name in set(sys.modules) - modules:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if any(origin.startswith(p) for p in added):
            del sys.modules[name]
    sys.path[:] = path


@dataclass
class Env:
    config_dir: Path
    data_dir: Path
    key: Ed25519PrivateKey
    work: Path

    def write_settings(self, **values: Any) -> None:
        data = {"trusted_keys": [{"name": "test-publisher", "public_key": public_key_text(self.key)}], **values}
        (self.config_dir / "plugins.yaml").write_text(yaml.safe_dump(data))

    def manager(self) -> PluginManager:
        return PluginManager(self.data_dir, load_plugin_settings(self.config_dir))

    def source(self, version: str = "1.0.0", **manifest: str) -> Path:
        """A copy of the example plugin with the given manifest values changed."""
        src = self.work / f"src-{version}-{len(list(self.work.iterdir()))}"
        shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__"))
        toml = (src / "plugin.toml").read_text()
        for key, value in {"version": version, **manifest}.items():
            lines = [ln for ln in toml.splitlines() if not ln.startswith(f"{key} =")]
            toml = "\n".join([*lines, f'{key} = "{value}"']) + "\n"
        (src / "plugin.toml").write_text(toml)
        return src

    def custom_source(self, name: str, files: dict[str, str], *, type: str = "channel", entry: str = "") -> Path:
        """A plugin made from scratch: `files` maps relative paths to their text."""
        src = self.work / f"custom-{name}-{len(list(self.work.iterdir()))}"
        module = next(iter(files)).split("/")[0].removesuffix(".py")
        (src).mkdir()
        (src / "plugin.toml").write_text(
            f'name = "{name}"\ntype = "{type}"\nversion = "1.0.0"\nentry_point = "{entry or module + ":Plugin"}"\n'
            'requires_assistant = ">=0"\n'
        )
        for rel, text in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        return src

    def archive(self, src: Path | None = None, *, signed: bool = True, key: Ed25519PrivateKey | None = None) -> Path:
        src = src or self.source()
        out = self.work / f"{src.name}.zip"
        build(src, out, (key or self.key) if signed else None)
        return out

    def snapshot(self) -> dict[str, str]:
        """Every file and directory under data/plugins (bar the lock file) with its content hash and mode."""
        root = self.data_dir / "plugins"
        found: dict[str, str] = {}
        if root.exists():
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root).as_posix()
                if rel in (".lock", "installed"):  # the lock and the bare skeleton directory are not state
                    continue
                content = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
                found[rel] = f"{content} {p.stat().st_mode:o}"
        return found


@pytest.fixture
def env(tmp_path: Path) -> Env:
    config_dir, data_dir, work = tmp_path / "config", tmp_path / "data", tmp_path / "work"
    for d in (config_dir, data_dir, work):
        d.mkdir()
    e = Env(config_dir, data_dir, Ed25519PrivateKey.generate(), work)
    e.write_settings()
    return e


@dataclass
class HttpsServer:
    root: Path
    base_url: str
    ca_pem: Path


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[HttpsServer]:
    """A real TLS file server on 127.0.0.1 whose certificate is issued by a CA made for this test only."""
    trustme = pytest.importorskip(
        "trustme", reason="trustme (a dev dependency) is not installed; run scripts/bootstrap"
    )
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    root = tmp_path / "www"
    root.mkdir()
    ca_pem = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)

    class Quiet(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            # /redirect?to=<url> answers 302 to that URL, for the redirect rules of the downloader.
            if self.path.startswith("/redirect?to="):
                self.send_response(302)
                self.send_header("Location", self.path.removeprefix("/redirect?to="))
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsServer(root, f"https://127.0.0.1:{server.server_address[1]}", ca_pem)
    finally:
        server.shutdown()
        server.server_close()
