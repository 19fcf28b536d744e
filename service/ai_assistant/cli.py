"""`ai-assistant`: the only place that parses argv."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

import httpx
import typer
from rich.console import Console

from . import __version__
from .errors import AssistantError, ConfigError
from .localsecrets import ensure_local_secrets, load_local_secrets, new_webhook_secret
from .runner import Listener
from .settings import Settings, load_settings, read_connectors_file

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="ai-assistant",
    help="Private enterprise AI assistant for company IM: run it, talk to it, manage its knowledge and plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount_subcommands() -> None:
    from .backup.cli import backup_app
    from .console.cli import admin_app
    from .dlq import dlq_app
    from .knowledge.cli import kb_app
    from .plugins.cli import plugin_app
    from .workflows.cli import workflow_app

    app.add_typer(kb_app, name="kb")
    app.add_typer(plugin_app, name="plugin")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(backup_app, name="backup")
    app.add_typer(admin_app, name="admin")
    app.add_typer(workflow_app, name="workflow")


_mount_subcommands()

ConfigDir = Annotated[
    Path,
    typer.Option(
        "--config-dir", envvar="AI_ASSISTANT_CONFIG_DIR", help="directory with assistant.yaml and connectors.yaml"
    ),
]
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="AI_ASSISTANT_DATA_DIR", help="where state (queue, memory, secrets) is kept"),
]
Host = Annotated[str | None, typer.Option("--host", help="listen address (default: server.host)")]
Port = Annotated[int | None, typer.Option("--port", help="listen port (default: server.port)")]


def _settings(config_dir: Path, data_dir: Path, host: str | None = None, port: int | None = None) -> Settings:
    load_local_secrets(data_dir)
    return load_settings(config_dir, data_dir, **{"server.host": host, "server.port": port})


PID_FILE = "ai-assistant.pid"


@contextlib.contextmanager
def _pid_file(settings: Settings) -> Iterator[None]:
    """`<data dir>/ai-assistant.pid`, so `rotate-secrets` can tell the running service to reload (SIGHUP)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / PID_FILE
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        # Only while it is still ours: during a blue/green switch (playbooks/deploy.yml) the incoming slot, which shares
        # this data directory, wrote its pid after ours, and `rotate-secrets` and `backup restore` must still find it.
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


def _reloader(service: Any) -> Callable[[], Coroutine[Any, Any, None]]:
    from .app import reload_secrets

    async def reload() -> None:
        try:
            await reload_secrets(service.state.parts)
        except Exception as exc:  # a broken secrets file must not take a running service down; keep the old values
            console.print(f"reload failed, keeping the current secrets: {exc}")

    return reload


def _listeners(settings: Settings, service_app: object) -> list[Listener]:
    from .app import metrics_app

    listeners = [Listener(service_app, settings.server.host, settings.server.port, "service")]
    if settings.server.metrics_port is not None:
        # Internal port, kept off the public route by nginx and the firewall; its own address when the monitoring
        # network is a different interface from the one the load balancer reaches.
        host = settings.server.metrics_host or settings.server.host
        listeners.append(Listener(metrics_app(), host, settings.server.metrics_port, "metrics"))
    return listeners


def _check_store_tls(settings: Settings) -> None:
    """A Redis certificate the configured CA does not verify stops the start with one line (ConfigError): unlike
    Redis being briefly unreachable, which the store rides out, it will not heal by retrying."""
    store = settings.store
    if store.backend != "redis" or store.redis_url is None:
        return
    import asyncio

    from .store.redis import check_tls

    ca_file = settings.resolve(store.redis_ca_file) if store.redis_ca_file is not None else None
    asyncio.run(check_tls(store.redis_url.get_secret_value(), ca_file))


@app.command()
def serve(
    config_dir: ConfigDir = Path("config"), data_dir: DataDir = Path("data"), host: Host = None, port: Port = None
) -> None:
    """Run only the service (webhooks, workers, /healthz, /readyz, /metrics) against the engine the config names."""
    from .app import create_app
    from .observability import configure_logging
    from .runner import run, serve_all

    settings = _settings(config_dir, data_dir, host, port)
    configure_logging(settings.server.log_level, settings.server.json_logs)
    service = create_app(settings)
    _check_store_tls(settings)
    listeners = _listeners(settings, service)
    with _pid_file(settings):
        run(serve_all(listeners, on_ready=lambda: _print_ready(settings, listeners), on_reload=_reloader(service)))


@app.command()
def up(
    config_dir: ConfigDir = Path("config"), data_dir: DataDir = Path("data"), host: Host = None, port: Port = None
) -> None:
    """Run the embedded stack in the foreground: the local model server, the service and a local generic-IM inbox.
    Ctrl-C (or SIGTERM) stops everything it started."""
    from .app import create_app
    from .engines.local_server import LocalModelServer
    from .observability import configure_logging
    from .runner import run, serve_all

    ensure_local_secrets(data_dir)
    settings = _settings(config_dir, data_dir, host, port)
    configure_logging(settings.server.log_level, settings.server.json_logs)
    model = LocalModelServer(settings.local_model, settings.data_dir / "logs" / "model-server.log")
    # The prompt budget is the window the embedded server is started with (local_model.context). It speaks plain
    # HTTP on loopback: a CA for a remote model server has nothing to verify there.
    embedded = {
        "base_url": model.base_url,
        "model": "local",
        "context_tokens": settings.local_model.context,
        "ca_file": None,
    }
    settings = settings.model_copy(update={"engine": settings.engine.model_copy(update=embedded)})
    service = create_app(settings)  # configuration errors surface before anything starts
    _check_store_tls(settings)
    inbox_listener = _local_inbox(settings)
    _ingest_sample_corpus(settings)
    with console.status(f"Starting the local model server ({model.model_path.name}) ...") as status:
        model.start()
        started = time.monotonic()
        try:
            model.wait_ready(
                on_tick=lambda: status.update(f"Loading {model.model_path.name} ... {time.monotonic() - started:.0f} s")
            )
        except RuntimeError as exc:
            model.stop()
            raise AssistantError(str(exc)) from None
    console.print(f"model server ready at {model.base_url} in {time.monotonic() - started:.1f} s")
    listeners = _listeners(settings, service) + ([inbox_listener] if inbox_listener else [])
    try:
        with _pid_file(settings):
            run(serve_all(listeners, on_ready=lambda: _print_ready(settings, listeners), on_reload=_reloader(service)))
    finally:
        model.stop()
        console.print("stopped the model server, the service and the inbox")


def _ingest_sample_corpus(settings: Settings) -> None:
    """`make up` ships a small knowledge base (samples/knowledge); re-running costs one hash per unchanged file."""
    if not settings.knowledge.enabled or settings.knowledge.sample_corpus is None:
        return
    corpus = settings.resolve(settings.knowledge.sample_corpus)
    if not corpus.is_dir():
        console.print(f"knowledge base: sample corpus {corpus} not found; skipped")
        return
    from rich.progress import Progress

    from .knowledge.retrieval import KnowledgeBase

    kb = KnowledgeBase.from_settings(settings.knowledge, settings.data_dir)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("Indexing the sample knowledge base", total=None)

            def on_progress(source: str, done: int, total: int) -> None:
                progress.update(task, description=f"Indexing {Path(source).name}", completed=done, total=total)

            report = kb.ingest_sync([corpus], progress=on_progress)
        console.print(f"knowledge base ({corpus}): {report.summary()}")
    finally:
        kb.close()


def _local_inbox(settings: Settings) -> Listener | None:
    """An inbox for the first generic-IM connector whose reply_url is on this machine."""
    from .inbox import Inbox, inbox_app
    from .runner import Listener

    _, raw = read_connectors_file(settings.config_dir)
    for options in raw.values():
        if options.get("platform") != "generic_im" or not options.get("reply_url"):
            continue
        url = urlsplit(str(options["reply_url"]))
        if url.hostname in ("127.0.0.1", "localhost", "::1"):
            inbox = Inbox(
                str(options["app_secret"]),
                log_file=settings.data_dir / "inbox.jsonl",
                echo=lambda r: console.print(f"answer to {r['event_id']} ({r['part']}/{r['parts']}): {r['text']}"),
            )
            return Listener(inbox_app(inbox, url.path or "/"), url.hostname, url.port or 80, "inbox")
    return None


def _print_ready(settings: Settings, listeners: list[Listener]) -> None:
    for lst in listeners:
        console.print(f"{lst.name:>8}: listening on http://{lst.host}:{lst.port}")
    out.print(f"ai-assistant {__version__} ready (Ctrl-C stops everything)", highlight=False)


@app.command()
def chat(
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    connector: Annotated[
        str | None, typer.Option(help="generic_im connector to talk through (default: the first)")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="webhook URL to post to (default: the connector's webhook_url)")
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="send one message, print the answer, exit")
    ] = None,
    chat_id: Annotated[str, typer.Option(help="conversation id")] = "terminal",
    timeout: Annotated[float, typer.Option(help="seconds to wait for each answer")] = 120.0,
) -> None:
    """Talk to the assistant from the terminal: sign and post messages as the generic IM platform, print the answers."""
    from standardwebhooks.webhooks import Webhook

    load_local_secrets(data_dir)
    file, raw = read_connectors_file(config_dir)
    generic = {n: o for n, o in raw.items() if o.get("platform") == "generic_im"}
    if not generic:
        raise ConfigError(file, "", "no connector with platform: generic_im to chat through")
    name = connector or next(iter(generic))
    if name not in generic:
        raise ConfigError(file, name, "no such generic_im connector")
    options = generic[name]
    target = url or str(options.get("webhook_url", ""))
    webhook = Webhook(str(options["app_secret"]))
    reply = urlsplit(str(options["reply_url"]))
    inbox_base = f"{reply.scheme}://{reply.netloc}"
    _ensure_inbox(str(options["app_secret"]), reply, inbox_base)

    def ask(text: str) -> None:
        event_id = f"cli-{uuid.uuid4().hex[:12]}"
        body = json.dumps(
            {"type": "message", "event_id": event_id, "chat_id": chat_id, "user_id": "terminal", "text": text},
            ensure_ascii=False,
        )
        now = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": webhook.sign(event_id, now, body),
        }
        try:
            resp = httpx.post(target, content=body.encode(), headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise AssistantError(f"cannot reach {target}: {exc} (is `ai-assistant up` running?)") from None
        if resp.status_code >= 300:
            raise AssistantError(f"{target} answered HTTP {resp.status_code}: {resp.text[:200]}")
        with console.status("waiting for the answer ..."):
            got = httpx.get(f"{inbox_base}/inbox/{event_id}", params={"wait": timeout}, timeout=timeout + 10).json()
        if not got["parts"]:
            console.print(f"no answer within {timeout:.0f} s")
            return
        print("".join(p["text"] for p in got["parts"]))  # plain: an answer is not re-wrapped to the terminal width

    if message is not None:
        ask(message)
        return
    console.print(f"chatting through {name} ({target}); Ctrl-D to leave")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if text:
            ask(text)


def _ensure_inbox(secret: str, reply: SplitResult, inbox_base: str) -> None:
    """Use the inbox of a running `ai-assistant up`, or start one in this process."""
    try:
        httpx.get(f"{inbox_base}/inbox/none", timeout=2)
        return
    except httpx.HTTPError:
        pass
    import uvicorn

    from .inbox import Inbox, inbox_app

    inbox = Inbox(secret)
    config = uvicorn.Config(
        inbox_app(inbox, reply.path or "/"),
        host=reply.hostname or "127.0.0.1",
        port=reply.port or 80,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)


@app.command("rotate-secrets")
def rotate_secrets(
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    finish: Annotated[
        bool, typer.Option("--finish", help="drop the previous values once every client has the new")
    ] = False,
) -> None:
    """Rotate the internal tokens (admin API, Alertmanager) in the secrets file without a failed request.

    Step 1 (no --finish): new tokens become current, the old ones stay accepted; the running service reloads (SIGHUP).
    Then give clients the new tokens (Alertmanager's credentials, operators). Step 2 (--finish): the old ones are
    refused from then on."""
    from .localsecrets import RotationError, rotate, secrets_path

    path = secrets_path(data_dir)
    if not path.exists():
        raise ConfigError(str(path), "", "not found (it is created by `ai-assistant up`, or by the assistant role)")
    try:
        changed = rotate(path, finish=finish)
    except RotationError as exc:
        raise AssistantError(str(exc)) from None
    pid_path = data_dir / PID_FILE
    signalled = False
    if pid_path.exists():
        try:
            os.kill(int(pid_path.read_text().strip()), signal.SIGHUP)
            signalled = True
        except (ValueError, ProcessLookupError, PermissionError):
            pass
    what = "dropped the previous" if finish else "new"
    out.print(f"{path}: {what} values for {', '.join(sorted(changed))}", highlight=False)
    out.print(
        "running service reloaded (SIGHUP)" if signalled else "no running service found; it reads them at start",
        highlight=False,
    )
    if not finish:
        out.print("next: give clients the new tokens, then run `ai-assistant rotate-secrets --finish`", highlight=False)


@app.command()
def secret() -> None:
    """Print a fresh Standard Webhooks secret (whsec_...) for a generic-IM connector."""
    out.print(new_webhook_secret())


@app.command("check-config")
def check_config(config_dir: ConfigDir = Path("config"), data_dir: DataDir = Path("data")) -> None:
    """Load and validate the configuration without starting anything (nothing is created or changed)."""
    from .doctor import validate

    configured = validate(_settings(config_dir, data_dir))
    for problem in configured.problems:
        console.print(f"warning: {problem}")
    out.print(f"configuration OK: {len(configured.connectors)} connector(s): {', '.join(configured.connectors)}")


@app.command()
def doctor(
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    json_output: Annotated[bool, typer.Option("--json", help="print the checks as JSON (for scripts)")] = False,
    tls_cert: Annotated[
        list[Path] | None,
        typer.Option("--tls-cert", help="also check this PEM certificate file, e.g. the one nginx serves (repeatable)"),
    ] = None,
) -> None:
    """Check the running configuration: config and secrets, state store, engine (with a short generation), knowledge
    store, each platform's API and credentials, TLS certificates, clock skew, disk space and the queue. Changes
    nothing. Exit status 1 when a check fails (warnings do not count); the JSON has the same checks as
    `/readyz?verbose`."""
    import asyncio

    from .doctor import diagnose, render

    report = asyncio.run(diagnose(config_dir, data_dir, tls_cert or []))
    if json_output:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        render(report, Console(soft_wrap=True, highlight=False))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def probe(
    url: Annotated[str, typer.Option(help="the instance's own address, e.g. http://127.0.0.1:8081 (not nginx)")],
    config_dir: ConfigDir = Path("config"),
    data_dir: DataDir = Path("data"),
    metrics_url: Annotated[
        str | None, typer.Option(help="its /metrics (default: URL/metrics; give the metrics port's when it has one)")
    ] = None,
    connector: Annotated[str | None, typer.Option(help="platform: probe connector (default: the first)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 60.0,
) -> None:
    """Send a signed synthetic message to one running instance and check it is de-duplicated and answered end to
    end, recorded in the store instead of sent (the deploy gate; docs/runbooks/deploy.md). Exit status 2 when not."""
    from .connectors.probe_check import run_probe

    result = run_probe(_settings(config_dir, data_dir), url, metrics_url, connector, timeout)
    out.print(
        f"probe OK: {result.event_id} acknowledged, its redelivery de-duplicated, answered by {result.answered_by} "
        f"in {result.seconds:.1f} s",
        highlight=False,
    )


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except AssistantError as exc:
        # Plain write, not rich: an error must stay one line whatever the terminal width.
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
