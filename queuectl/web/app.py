"""The dashboard's ASGI app: login, pages, actions, live updates by server-sent events.

Every page and stream needs a session (else: the login page, or 401); every POST but the login
needs the session's CSRF token (else 403, nothing done). Pages are server-rendered with
autoescaping, so a job's command, labels, errors and output are text, never markup; the log
tail is added with `textContent` by the page's script. Responses carry a strict CSP (scripts and
styles from this origin only), no-referrer and no framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from queuectl import __version__, errors
from queuectl.web import actions, auth, chart, fmt, pages
from queuectl.web.daemon import Daemon
from queuectl.web.forms import FormTooLarge, read_form
from queuectl.web.logtail import log_events

#: How often a live page asks the daemon again.
LIVE_EVERY_S = 1.0
#: A live stream ends after this long and the browser opens a new one (EventSource reconnects
#: by itself), so no stream, and no session it checked at its start, lives forever.
LIVE_MAX_S = 300.0
#: How often the overview's chart is sampled while no one looks at it.
SAMPLE_EVERY_S = 10.0
#: The Host names a loopback dashboard answers to.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
#: A wrong login waits this long, so a token cannot be guessed quickly.
WRONG_LOGIN_DELAY_S = 0.5
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
NAV = (("overview", "/", "Overview"), ("jobs", "/jobs", "Jobs"), ("dlq", "/dlq", "Dead letters"),
       ("queues", "/queues", "Queues"), ("cron", "/cron", "Cron"), ("daemons", "/daemons", "Daemons"))


@dataclass
class WebState:
    """What the app holds: the daemon, the sessions, the templates and the chart's samples."""

    daemon: Daemon
    sessions: auth.Sessions
    templates: jinja2.Environment
    throughput: chart.Throughput
    secure_cookie: bool
    daemon_address: str
    #: Set when the server is told to stop: the live streams end at their next turn, so the
    #: server's graceful shutdown finds no request still running.
    stopping: bool = False


def templates() -> jinja2.Environment:
    """The package's templates, autoescaped (every .html), with the formatting filters."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("queuectl.web", "templates"), autoescape=True,
                             undefined=jinja2.ChainableUndefined)
    env.filters.update(fmt.FILTERS)
    env.globals.update(nav=NAV, version=__version__, ago=fmt.ago, urlencode=urlencode, job_url=actions.job_url)
    return env


def _state(request: Request) -> WebState:
    return request.app.state.web


def _session(request: Request) -> auth.Session | None:
    return _state(request).sessions.get(request.cookies.get(auth.COOKIE))


def here(name: str, query: dict[str, str]) -> str:
    """The address of page `name` with `query` (where a form's errors lead back to)."""
    if name == "job":
        return actions.job_url(query.get("id", ""))
    path = next((p for n, p, _ in NAV if n == name), "/")
    rest = {k: v for k, v in query.items() if k != "id"}
    return f"{path}?{urlencode(rest)}" if rest else path


def _page(state: WebState, request: Request, name: str, session: auth.Session | None, ctx: dict[str, Any],
          status: int = 200) -> HTMLResponse:
    flashes = list(session.flashes) if session else []
    if session:
        session.flashes.clear()
    html = state.templates.get_template(f"{name}.html").render(
        page=name, session=session, csrf=session.csrf if session else "", flashes=flashes, now=time.time(),
        live_url=f"/events/{name}?{urlencode({**request.query_params, **request.path_params})}",
        query=dict(request.query_params), daemon_address=state.daemon_address,
        here=here(name, {**request.query_params, **request.path_params}), **ctx)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def page_route(name: str) -> Callable[[Request], Awaitable[Response]]:
    """The GET handler of page `name`: its gatherer's context in its template."""
    async def handler(request: Request) -> Response:
        state = _state(request)
        session = _session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        query = request.query_params
        if name == "job":
            query = type(query)({**query, "id": request.path_params["id"]})
        try:
            ctx = await pages.PAGES[name](state.daemon, query, state.throughput)
        except errors.JobNotFound as exc:
            return _page(state, request, "error", session, {"message": exc.message}, 404)
        except errors.QueuectlError as exc:
            return _page(state, request, "error", session, {"message": exc.message}, 502)
        return _page(state, request, name, session, ctx)
    return handler


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    """One server-sent event. A CR ends a line for the browser's parser as LF does, so both
    become LF here: no text of a job's can start a field of its own."""
    data = data.replace("\r\n", "\n").replace("\r", "\n")
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (f"id: {event_id}\n" if event_id else "") + f"event: {event}\n{lines}\n"


async def live(request: Request) -> Response:
    """`/events/PAGE?...`: the page's live part, re-rendered every LIVE_EVERY_S and sent when it
    changed (event `live`); `down` with the reason while the daemon does not answer."""
    state = _state(request)
    session = _session(request)
    name = request.path_params["page"]
    if session is None or name not in pages.PAGES:
        return PlainTextResponse("log in first", status_code=401)
    query = request.query_params
    template = state.templates.get_template(f"live/{name}.html")

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        last = None
        ends = time.monotonic() + LIVE_MAX_S
        while time.monotonic() < ends and not state.stopping and state.sessions.get(session.id) is not None:
            try:
                ctx = await pages.PAGES[name](state.daemon, query, state.throughput)
                html = template.render(page=name, csrf=session.csrf, now=time.time(), query=dict(query),
                                       here=here(name, dict(query)), **ctx)
                if html != last:
                    yield _sse("live", html)
                    last = html
            except errors.JobNotFound as exc:
                yield _sse("down", exc.message)
                return
            except errors.QueuectlError as exc:
                last = None
                yield _sse("down", exc.message)
            await asyncio.sleep(LIVE_EVERY_S)
    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def log_stream(request: Request) -> Response:
    """`/jobs/ID/log`: the job's output as it is written (see logtail)."""
    state = _state(request)
    if _session(request) is None:
        return PlainTextResponse("log in first", status_code=401)
    resume = request.headers.get("last-event-id")
    events = log_events(state.daemon, request.path_params["id"], resume, LIVE_MAX_S, lambda: state.stopping)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for event, data, event_id in events:
            # Output as JSON text: one line whatever it holds (CRs of progress bars included).
            yield _sse(event, json.dumps(data) if event == "log" else data, event_id)
    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def login_page(request: Request) -> Response:
    """GET /login: the form; `?token=` (the link `queuectl web` prints) logs in at once."""
    state = _state(request)
    token = request.query_params.get("token")
    if token is not None:
        return await _login(request, token)
    return _page(state, request, "login", None, {})


async def login(request: Request) -> Response:
    """POST /login: a session for the right token (the form needs no CSRF token: it has none
    to protect, and SameSite=Strict keeps the session cookie from other sites' requests)."""
    try:
        form = await read_form(request)
    except FormTooLarge:
        return PlainTextResponse("form too large", status_code=413)
    return await _login(request, form.get("token"))


async def _login(request: Request, token: str) -> Response:
    state = _state(request)
    session = state.sessions.login(token)
    if session is None:
        await asyncio.sleep(WRONG_LOGIN_DELAY_S)
        return _page(state, request, "login", None, {"error": "Wrong token: nothing was opened. Use the token "
                                                               "`queuectl web` printed."}, 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(auth.COOKIE, session.id, max_age=auth.SESSION_S, path="/", httponly=True,
                        samesite="strict", secure=state.secure_cookie)
    return response


def _refuse(why: str, status: int) -> Response:
    return PlainTextResponse(why, status_code=status)


def action_route(act: actions.Action) -> Callable[[Request], Awaitable[Response]]:
    """The POST handler of an action: session, CSRF token, then the action; its message (or the
    daemon's error) is shown on the page it leads to."""
    async def handler(request: Request) -> Response:
        state = _state(request)
        session = _session(request)
        if session is None:
            return _refuse("log in first: nothing was done", 403)
        try:
            form = await read_form(request)
        except FormTooLarge:
            return _refuse("form too large: nothing was done", 413)
        if not auth.csrf_ok(session, form.get("csrf")):
            return _refuse("missing or wrong CSRF token: nothing was done; reload the page and try again", 403)
        back = form.get("back")
        try:
            message, target = await act(state.daemon, form, dict(request.path_params))
            session.flashes.append(("ok", message))
        except errors.QueuectlError as exc:
            session.flashes.append(("error", exc.message))
            target = back if back.startswith("/") and not back.startswith("//") and "\\" not in back else "/"
        return RedirectResponse(target, status_code=303)
    handler.__doc__ = act.__doc__
    return handler


async def logout(request: Request) -> Response:
    """POST /logout (with the CSRF token): the session ends."""
    session = _session(request)
    try:
        form = await read_form(request)
    except FormTooLarge:
        return _refuse("form too large", 413)
    if session is not None and auth.csrf_ok(session, form.get("csrf")):
        _state(request).sessions.logout(session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response


class SecurityHeaders:
    """ASGI middleware: the same protective headers on every response."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]

    def __init__(self, app: Any, web: WebState) -> None:
        self.app = app
        self.web = web  #: the app's state (`serve` sets `stopping` on it)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)
        await self.app(scope, receive, send_with_headers)


def create_app(daemon: Daemon, token: str, *, secure_cookie: bool = False, daemon_address: str = "",
               sample_every_s: float = SAMPLE_EVERY_S, allowed_hosts: list[str] | None = None) -> Any:
    """The dashboard for `daemon`, opened by `token`. `allowed_hosts`: the Host headers served
    (None: any); on loopback only loopback names, so a page of another site whose name was
    rebound to 127.0.0.1 gets 400, not the dashboard."""
    state = WebState(daemon, auth.Sessions(token), templates(), chart.Throughput(min_gap_s=min(5.0, sample_every_s)),
                     secure_cookie, daemon_address)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sample() -> None:
            while True:
                with contextlib.suppress(errors.QueuectlError):
                    status = await daemon.call("daemon.status")
                    state.throughput.sample(time.monotonic(), status.get("queues", []))
                await asyncio.sleep(sample_every_s)
        task = asyncio.create_task(sample(), name="queuectl-web-sampler")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            daemon.close()

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page_route("overview"), methods=["GET"]),
        Route("/jobs", page_route("jobs"), methods=["GET"]),
        Route("/jobs/{id}", page_route("job"), methods=["GET"]),
        Route("/jobs/{id}/log", log_stream, methods=["GET"]),
        Route("/dlq", page_route("dlq"), methods=["GET"]),
        Route("/queues", page_route("queues"), methods=["GET"]),
        Route("/cron", page_route("cron"), methods=["GET"]),
        Route("/daemons", page_route("daemons"), methods=["GET"]),
        Route("/events/{page}", live, methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        *[Route(path, action_route(act), methods=["POST"]) for path, act in actions.ACTIONS],
        Mount("/static", StaticFiles(packages=[("queuectl.web", "static")]), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.web = state
    return SecurityHeaders(app, state)
