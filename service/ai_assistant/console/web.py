"""The console's pages under /admin: plain server-rendered HTML, no JavaScript. Every POST carries a CSRF token and is
checked on the server for a signed-in admin; viewers see everything and change nothing."""

from __future__ import annotations

import csv
import hmac
import io
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio.to_thread
from aiolimiter import AsyncLimiter
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadData, URLSafeTimedSerializer

from .. import __version__
from ..edge import client_address
from ..knowledge.retrieval import KnowledgeBase
from ..plugins.manager import PluginManager
from ..store import StateStore
from .connectors_file import ConnectorEditError, ConnectorsFile, form_fields, form_values, redact, route
from .i18n import LANGUAGES, translator
from .live import ApplyFailed, LiveConnectors
from .overview import ERROR_OUTCOMES, AnswerRate, answers_by_outcome, latency_quantiles
from .settings import ConsoleSettings
from .store import ConsoleStore, LoginRefused, User
from .words_file import WordsFile

if TYPE_CHECKING:
    from ..workflows.versions import WorkflowFiles

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PREFIX = "/admin"
SESSION_COOKIE = "aia_session"
CSRF_COOKIE = "aia_csrf"
LANG_COOKIE = "aia_lang"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Readiness = Callable[[], Awaitable[dict[str, str]]]


@dataclass
class ConsoleDeps:
    """What the console reads from the running service; nothing more."""

    store: StateStore
    readiness: Readiness
    connectors_file: ConnectorsFile
    running_connectors: list[str]
    trusted_proxies: Sequence[Network]
    # None where the knowledge base is off (knowledge.enabled: false): its page says so instead of failing.
    knowledge: KnowledgeBase | None = None
    plugins: PluginManager | None = None
    running_plugins: list[str] = field(default_factory=list)  # archive plugins the running service loaded
    words: WordsFile | None = None  # None where filters.words_file is not set
    workflows: WorkflowFiles | None = None  # the config dir's workflows/ folder, as the editor saves it
    # The running service's connectors; None (tools, tests of the pages alone): edits apply at the next restart.
    live_connectors: LiveConnectors | None = None


@dataclass(frozen=True)
class Page:
    """One entry of the navigation and the routes behind it. Pages are registered in pages.PAGES, in nav order."""

    key: str | None  # i18n key of the nav label; None for routes that belong to another page (no nav entry)
    path: str  # under PREFIX; also what marks the nav entry current
    # None for a page whose routes another page's router already holds (the core pages share console_router)
    router: Callable[[Console], APIRouter] | None


class Console:
    def __init__(self, settings: ConsoleSettings, accounts: ConsoleStore, deps: ConsoleDeps, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.accounts = accounts
        self.deps = deps
        self.signer = URLSafeTimedSerializer(accounts.signing_key(), salt="ai-assistant-console-csrf")
        self.templates = Jinja2Templates(directory=HERE / "templates")
        # The audit log's before/after as people wrote them: Jinja's tojson would show 助理 as \u52a9\u7406.
        self.templates.env.filters["json_text"] = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)
        self.rate = AnswerRate()
        self.started_digest = deps.connectors_file.digest()
        self._limiters: dict[str, AsyncLimiter] = {}
        # (i18n key, path) of every page in nav order; mount_console fills it from the registered pages.
        self.nav: list[tuple[str, str]] = []

    # -- request helpers --------------------------------------------------------------------------------------------
    def _tls(self, request: Request) -> bool:
        """Secure cookies when the browser's connection is TLS: directly, or at a trusted proxy that says so."""
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else None
        try:
            trusted = peer is not None and any(ipaddress.ip_address(peer) in n for n in self.deps.trusted_proxies)
        except ValueError:
            trusted = False
        return trusted and request.headers.get("x-forwarded-proto", "").lower() == "https"

    def _cookie(self, request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict", secure=self._tls(request)
        )

    @staticmethod
    def _lang(request: Request) -> str:
        lang = request.cookies.get(LANG_COOKIE, "")
        if lang in LANGUAGES:
            return lang
        accept = request.headers.get("accept-language", "")
        return "zh" if accept.lower().startswith("zh") else "en"

    def _csrf_payload(self, request: Request, csrf_cookie: str) -> str:
        # Bound to the session too: a token from before sign-in is useless after it.
        session = request.cookies.get(SESSION_COOKIE, "")
        return csrf_cookie + "." + (hmac.new(csrf_cookie.encode(), session.encode(), "sha256").hexdigest()[:16])

    def csrf_ok(self, request: Request, form: dict[str, str]) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE)
        token = form.get("csrf_token")
        if not cookie or not token:
            return False
        try:
            value = self.signer.loads(token, max_age=24 * 3600)
        except BadData:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, self._csrf_payload(request, cookie))

    def render(
        self, request: Request, template: str, status: int = 200, user: User | None = None, **context: Any
    ) -> HTMLResponse:
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        lang = self._lang(request)
        page = self.templates.TemplateResponse(
            request,
            template,
            {
                "t": translator(lang),
                "lang": lang,
                "user": user,
                "csrf_token": self.signer.dumps(self._csrf_payload(request, cookie)),
                "path": request.url.path,
                "version": __version__,
                "nav": self.nav,
                **context,
            },
            status_code=status,
        )
        if request.cookies.get(CSRF_COOKIE) != cookie:
            self._cookie(request, page, CSRF_COOKIE, cookie, None)
        return page

    def user(self, request: Request) -> User | Response:
        token = request.cookies.get(SESSION_COOKIE)
        found = self.accounts.session_user(token, self.settings.idle_timeout_seconds) if token else None
        if found is not None:
            return found
        target = f"{PREFIX}/login" + ("?expired=1" if token else "")
        response = RedirectResponse(target, status_code=303)
        if token:
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def change(self, request: Request) -> tuple[User, dict[str, str]] | Response:
        """The gate of every POST that changes something: signed in, CSRF token valid, role admin."""
        found = self.user(request)
        if isinstance(found, Response):
            return found
        try:
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        except Exception:  # not a form body at all
            form = {}
        if not self.csrf_ok(request, form):
            return self.render(request, "message.html", 403, found, message_key="csrf")
        if not found.can_change:
            log.warning("console: viewer %s refused %s", found.name, request.url.path)
            return self.render(request, "message.html", 403, found, message_key="viewer_refused")
        return found, form


def console_router(console: Console) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    files = console.deps.connectors_file

    @router.get("")
    @router.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/overview", status_code=303)

    @router.get("/login")
    async def login_page(request: Request, expired: str | None = None) -> Response:
        return console.render(request, "login.html", message_key="session_expired" if expired else None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        name = form.get("name", "").strip()
        if not console.csrf_ok(request, form):
            return console.render(request, "login.html", 403, message_key="csrf", name=name)
        # Behind nginx every peer is the proxy: count per real client (X-Forwarded-For from trusted proxies only).
        peer = client_address(request.scope, request.headers, console.deps.trusted_proxies) or "-"
        limiter = console._limiters.get(peer)
        if limiter is None:
            if len(console._limiters) > 10_000:  # bounded memory whatever the traffic
                console._limiters.clear()
            limiter = console._limiters[peer] = AsyncLimiter(console.settings.login_attempts_per_minute, 60)
        if not limiter.has_capacity():
            return console.render(request, "login.html", 429, message_key="rate_limited", name=name)
        await limiter.acquire()
        s = console.settings
        try:
            user = await anyio.to_thread.run_sync(
                console.accounts.authenticate, name, form.get("password", ""), s.max_failed_logins, s.lockout_seconds
            )
        except LoginRefused as refused:
            console.accounts.audit(name or "-", "sign_in_refused", "console", after={"locked": refused.locked})
            key = "locked" if refused.locked else "bad_credentials"
            return console.render(request, "login.html", 401, message_key=key, name=name)
        console.accounts.audit(user.name, "sign_in", "console")
        response = RedirectResponse(f"{PREFIX}/overview", status_code=303)
        session = console.accounts.new_session(user, s.idle_timeout_seconds)
        console._cookie(request, response, SESSION_COOKIE, session, None)
        # A fresh CSRF cookie at sign-in: a token planted before it is worthless (login CSRF / fixation).
        console._cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(24), None)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not console.csrf_ok(request, form):
            return console.render(request, "message.html", 403, message_key="csrf")
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            console.accounts.end_session(token)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @router.get("/lang/{lang}")
    async def language(request: Request, lang: str, next: str = f"{PREFIX}/overview") -> Response:
        target = next if next.startswith(PREFIX + "/") and "//" not in next else f"{PREFIX}/overview"
        response = RedirectResponse(target, status_code=303)
        if lang in LANGUAGES:
            console._cookie(request, response, LANG_COOKIE, lang, 365 * 24 * 3600)
        return response

    # -- overview ---------------------------------------------------------------------------------------------------
    @router.get("/overview")
    async def overview(request: Request) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        health = await console.deps.readiness()
        stats = await console.deps.store.stats()
        outcomes = answers_by_outcome()
        total = sum(outcomes.values())
        errors = sum(outcomes.get(o, 0.0) for o in ERROR_OUTCOMES)
        return console.render(
            request,
            "overview.html",
            user=user,
            health=health,
            queue_depth=stats.depth,
            oldest_age=round(stats.oldest_age_seconds, 1),
            rate=console.rate.observe(),
            answered=int(outcomes.get("answered", 0)),
            error_ratio=(errors / total) if total else None,
            quantiles=latency_quantiles(),
        )

    # -- connectors -------------------------------------------------------------------------------------------------
    live = console.deps.live_connectors

    async def applied(request: Request, user: User) -> Response:
        """After a saved edit: apply it to the running service, or say it waits for a restart."""
        if live is None:
            return RedirectResponse(f"{PREFIX}/connectors?saved=1", status_code=303)
        try:
            await live.apply()
        except ApplyFailed as exc:
            log.error("console: connectors.yaml saved but not applied live: %s", exc)
            problem = translator(console._lang(request))["apply_failed"] + " " + str(exc)
            return listing(request, user, 409, saved="1", problem=problem)
        console.started_digest = files.digest()
        return RedirectResponse(f"{PREFIX}/connectors?saved=live", status_code=303)

    def listing(request: Request, user: User, status: int = 200, **extra: Any) -> Response:
        rows = []
        for state, entries in (("enabled", files.enabled()), ("disabled", files.disabled())):
            for name, entry in entries.items():
                if not files.shown(entry):
                    continue
                rows.append({"name": name, "state": state, "platform": entry.get("platform"),
                             "path": route(entry.get("webhook_url"))})  # fmt: skip
        return console.render(
            request,
            "connectors.html",
            status,
            user=user,
            rows=rows,
            platforms=files.platforms(),
            writable=files.writable(),
            pending=files.digest() != console.started_digest,
            running=live.names() if live is not None else console.deps.running_connectors,
            **extra,
        )

    @router.get("/connectors")
    async def connectors(request: Request, saved: str | None = None) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        return listing(request, user, saved=saved)

    def form_page(
        request: Request, user: User, name: str, platform: str, creating: bool, values: dict[str, Any], **extra: Any
    ) -> Response:
        if platform not in files.platforms():
            return console.render(request, "message.html", 404, user, message_key="not_found")
        fields = form_fields(files.model(platform))
        return console.render(
            request,
            "connector_form.html",
            extra.pop("status", 200),
            user=user,
            name=name,
            platform=platform,
            creating=creating,
            fields=fields,
            values=values,
            errors=extra.pop("errors", {}),
            **extra,
        )

    @router.get("/connectors/new")
    async def new_form(request: Request, platform: str = "generic_im") -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        if platform not in files.platforms():
            return console.render(request, "message.html", 404, user, message_key="not_found")
        return form_page(request, user, "", platform, True, form_values(files.model(platform), {}))

    @router.post("/connectors/new")
    async def create(request: Request) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, form = gate
        name, platform = form.get("name", "").strip(), form.get("platform", "")
        try:
            entry, new_secrets = files.build(name, platform, form, creating=True)
            files.save({**files.enabled(), name: entry}, new_secrets=new_secrets)
        except ConnectorEditError as exc:
            return form_page(request, user, name, platform, True, form, errors=exc.errors, status=400)
        console.accounts.audit(user.name, "connector.add", name, None, redact(entry, files.model(platform)))
        return await applied(request, user)

    def find(name: str) -> tuple[dict[str, Any] | None, bool]:
        enabled, disabled = files.enabled(), files.disabled()
        entry, is_enabled = (enabled[name], True) if name in enabled else (disabled.get(name), False)
        return (entry, is_enabled) if entry is not None and files.shown(entry) else (None, False)

    @router.get("/connectors/{name}/edit")
    async def edit_form(request: Request, name: str) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        entry, _ = find(name)
        if entry is None:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        model = _model(files, entry)
        if model is None:  # a platform whose plugin is gone: the file still names it, the form cannot be built
            return console.render(request, "message.html", 404, user, message_key="not_found")
        return form_page(request, user, name, str(entry["platform"]), False, form_values(model, entry))

    @router.post("/connectors/{name}/edit")
    async def edit(request: Request, name: str) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, form = gate
        before, is_enabled = find(name)
        if before is None:
            return console.render(request, "message.html", 404, user, message_key="not_found")
        platform = str(before["platform"])
        try:
            entry, new_secrets = files.build(name, platform, form, creating=False)
            if is_enabled:
                files.save({**files.enabled(), name: entry}, new_secrets=new_secrets)
            else:
                files.save(files.enabled(), {**files.disabled(), name: entry}, new_secrets)
        except ConnectorEditError as exc:
            return form_page(request, user, name, platform, False, form, errors=exc.errors, status=400)
        model = files.model(platform)
        changed = sorted(new_secrets)  # which secrets were replaced, never their values
        after = {**(redact(entry, model) or {}), **({"replaced_secrets": changed} if changed else {})}
        console.accounts.audit(user.name, "connector.edit", name, redact(before, model), after)
        return await applied(request, user)

    async def move(request: Request, name: str, action: str) -> Response:
        gate = await console.change(request)
        if isinstance(gate, Response):
            return gate
        user, _ = gate
        enabled, disabled = files.enabled(), files.disabled()
        entry = enabled.get(name) or disabled.get(name)
        if entry is None or not files.shown(entry):
            return console.render(request, "message.html", 404, user, message_key="not_found")
        if action in ("disable", "delete") and name in enabled and live is not None:
            needed = live.still_needed(name)
            if needed is not None:
                return listing(request, user, 409, problem=needed)
        if action == "disable" and name in enabled:
            disabled[name] = enabled.pop(name)
        elif action == "enable" and name in disabled:
            enabled[name] = disabled.pop(name)
        elif action == "delete":
            enabled.pop(name, None)
            disabled.pop(name, None)
        else:
            return RedirectResponse(f"{PREFIX}/connectors", status_code=303)  # already in that state
        try:
            files.save(enabled, disabled)
        except ConnectorEditError as exc:
            return listing(request, user, 409, problem=next(iter(exc.errors.values())))
        model = _model(files, entry)
        after = None if action == "delete" else {"state": "enabled" if action == "enable" else "disabled"}
        console.accounts.audit(user.name, f"connector.{action}", name, redact(entry, model), after)
        return await applied(request, user)

    @router.post("/connectors/{name}/disable")
    async def disable(request: Request, name: str) -> Response:
        return await move(request, name, "disable")

    @router.post("/connectors/{name}/enable")
    async def enable(request: Request, name: str) -> Response:
        return await move(request, name, "enable")

    @router.post("/connectors/{name}/delete")
    async def delete(request: Request, name: str) -> Response:
        return await move(request, name, "delete")

    # -- audit ------------------------------------------------------------------------------------------------------
    @router.get("/audit")
    async def audit(request: Request) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        entries = [e.as_dict() for e in console.accounts.audit_entries(500)]
        return console.render(request, "audit.html", user=user, entries=entries)

    @router.get("/audit.json")
    async def audit_json(request: Request) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        entries = [e.as_dict() for e in console.accounts.audit_entries()]
        return JSONResponse(entries, headers=_attachment("audit.json"))

    @router.get("/audit.csv")
    async def audit_csv(request: Request) -> Response:
        user = console.user(request)
        if isinstance(user, Response):
            return user
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "at", "actor", "action", "target", "before", "after"])
        for e in console.accounts.audit_entries():
            d = e.as_dict()
            dumped = [json.dumps(d[k], ensure_ascii=False) if d[k] is not None else "" for k in ("before", "after")]
            writer.writerow([d["id"], d["at"], _cell(d["actor"]), d["action"], _cell(d["target"]), *dumped])
        return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=_attachment("audit.csv"))

    return router


def _model(files: ConnectorsFile, entry: dict[str, Any]) -> Any:
    try:
        return files.model(str(entry.get("platform")))
    except LookupError:
        return None


def _cell(value: str) -> str:
    """No formula injection when the export is opened in a spreadsheet (names come from sign-in forms)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _attachment(name: str) -> dict[str, str]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return {"content-disposition": f"attachment; filename*=UTF-8''{quote(f'console-{stamp}-{name}')}"}


# The pages of console_router, listed so that they sit in the navigation like the rest.
CORE_PAGES = (Page("overview", "/overview", console_router), Page("connectors", "/connectors", None))
AUDIT_PAGE = Page("audit", "/audit", None)


def mount_console(
    app: FastAPI, settings: ConsoleSettings, data_dir: Path, deps: ConsoleDeps, pages: Sequence[Page] | None = None
) -> ConsoleStore:
    """Add the console's pages and static files to the service's app; returns its store for the lifespan to close.
    `pages` defaults to pages.PAGES; a new page is one module with a router factory and one entry there."""
    from .pages import PAGES

    accounts = ConsoleStore.in_data_dir(data_dir)
    console = Console(settings, accounts, deps, data_dir)
    chosen = list(PAGES if pages is None else pages)
    console.nav = [(p.key, PREFIX + p.path) for p in chosen if p.key is not None]
    for page in chosen:
        if page.router is not None:
            app.include_router(page.router(console))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    return accounts
