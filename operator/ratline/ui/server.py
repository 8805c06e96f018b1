"""The UI's aiohttp application: routes, security middleware, login, and `serve()`.

Every request but /healthz, /login and /static passes `_guard`: the bearer token
(header or login cookie) is verified by a TokenReview, else 401 with nothing but
the login form. Handlers then authorize their namespace with a SubjectAccessReview
before reading the store (`views.py`). POSTs must come from this origin and carry
the CSRF value bound to the caller's token. Every response gets strict security
headers (a CSP without inline script or style, no framing, no caching).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from kubernetes import client

from ratline.store.queries import RunQueries
from ratline.ui import auth

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
OPEN_PATHS = ("/healthz", "/login", "/static/", "/favicon.ico")


@dataclass(frozen=True)
class Config:
    """What the server needs; built by `ratline ui` from its flags."""

    kube: client.Configuration  # the UI's own API access (reviews) and the server/CA
    namespaces: tuple[str, ...] = ()  # offered on the start page; others by URL
    dsn: str | None = None  # for retry, which seeds the new run's history
    tls: bool = False  # behind TLS (here or at a proxy): cookies get Secure
    secret: bytes = b""  # CSRF key; random per process when empty


GATE: web.AppKey[auth.Gate] = web.AppKey("gate", auth.Gate)
QUERIES: web.AppKey[RunQueries] = web.AppKey("queries", RunQueries)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
SECRET: web.AppKey[bytes] = web.AppKey("secret", bytes)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
CLIENTS: web.AppKey[auth.UserClients] = web.AppKey("clients", auth.UserClients)
USER: web.RequestKey[auth.User] = web.RequestKey("user", auth.User)
TOKEN: web.RequestKey[str] = web.RequestKey("token", str)


def build_app(config: Config, queries: RunQueries, reviewer: auth.Reviewer) -> web.Application:
    """The application; `reviewer` is `auth.KubeReviewer` in production, a fake in tests."""
    from ratline.ui import views

    app = web.Application(middlewares=[_headers, _errors, _guard], client_max_size=256 * 1024)
    app[CONFIG] = config
    app[GATE] = auth.Gate(reviewer)
    app[QUERIES] = queries
    app[CLIENTS] = auth.UserClients(config.kube)
    app.on_cleanup.append(_close_clients)
    app[SECRET] = config.secret or secrets.token_bytes(32)
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    views.add_routes(app)
    return app


async def _close_clients(app: web.Application) -> None:
    app[CLIENTS].close()


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page from `templates/`, with the caller's CSRF value for its forms."""
    token = request.get(TOKEN)
    csrf = auth.csrf_token(request.app[SECRET], token) if token else ""
    user = request.get(USER)
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(csrf=csrf, user=user, static=_static_url(request), **context)
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _static_url(request: web.Request) -> Callable[[str], str]:
    resource = request.app.router["static"]

    def url(name: str) -> str:
        return str(resource.url_for(filename=name))

    return url


def redirect(location: str) -> web.Response:
    """303 to a local path (a plain response: returning HTTPException is deprecated)."""
    return web.Response(status=303, headers={"Location": location})


# -- middleware -----------------------------------------------------------------------------------


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(request, exc)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    # Not "no-referrer": with it browsers send `Origin: null` on same-site form posts.
    h["Referrer-Policy"] = "same-origin"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if not request.path.startswith("/static/"):
        h["Cache-Control"] = "no-store"
    if request.app[CONFIG].tls:
        h["Strict-Transport-Security"] = "max-age=31536000"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 and 403 carry no data: a login form, or one sentence."""
    try:
        return await handler(request)
    except auth.Denied as denied:
        if denied.status == 401:
            response = render(request, "login.html", status=401, error="", next=request.path_qs)
            response.headers["WWW-Authenticate"] = 'Bearer realm="ratline"'
            if request.cookies.get(auth.COOKIE):
                response.del_cookie(auth.COOKIE, path="/")
            return response
        return render(request, "forbidden.html", status=403)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST" and not _same_origin(request):
        raise auth.Denied(403)
    if request.path.startswith(OPEN_PATHS):
        return await handler(request)
    token = auth.bearer(request.headers, request.cookies)
    request[USER] = await request.app[GATE].user(token)
    request[TOKEN] = token or ""
    if request.method == "POST":
        form = await request.post()
        presented = form.get("csrf")
        header = request.headers.get("X-CSRF-Token")
        value = header if header else presented if isinstance(presented, str) else None
        if not auth.csrf_ok(request.app[SECRET], token or "", value):
            raise auth.Denied(403)
    return await handler(request)


def _same_origin(request: web.Request) -> bool:
    """Browsers send Origin on POST; a different one is a cross-site request."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


# -- open routes ----------------------------------------------------------------------------------


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _no_icon(_: web.Request) -> web.Response:
    return web.Response(status=204)


async def _login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", error="", next=_safe_next(request.query.get("next")))


async def _login(request: web.Request) -> web.StreamResponse:
    """Check the pasted token with a TokenReview, then keep it in an HttpOnly cookie."""
    form = await request.post()
    token = str(form.get("token") or "").strip()
    target = _safe_next(str(form.get("next") or "/"))
    try:
        await request.app[GATE].user(token)
    except auth.Denied:
        return render(
            request, "login.html", status=401, error="That token was not accepted.", next=target
        )
    response = redirect(target)
    response.set_cookie(
        auth.COOKIE,
        token,
        httponly=True,
        secure=request.app[CONFIG].tls,
        samesite="Strict",
        path="/",
        max_age=8 * 3600,
    )
    return response


async def _logout(request: web.Request) -> web.StreamResponse:
    response = redirect("/login")
    response.del_cookie(auth.COOKIE, path="/")
    return response


def _safe_next(value: str | None) -> str:
    """Only local paths: a login link must not bounce the user to another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


# -- running --------------------------------------------------------------------------------------


async def serve(
    config: Config, queries: RunQueries, host: str, port: int, ssl_context: Any = None
) -> None:
    """Serve until cancelled."""
    import asyncio

    reviewer = auth.KubeReviewer(client.ApiClient(config.kube))
    app = build_app(config, queries, reviewer)
    runner = web.AppRunner(app, access_log=log)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    log.info("ratline ui listening on %s:%d", host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
