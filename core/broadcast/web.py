"""The hub's one Starlette application: both WebSocket paths, the browser's pages, sign-in and the runs as JSON.

Page, data and live socket share one address and one TLS setup. Security: the viewer token is exchanged once
(``POST /session`` with ``Authorization: Bearer``) for a random session id in an ``HttpOnly; SameSite=Strict``
cookie (``Secure`` over TLS); the token is never in a URL or in page storage. Requests and sockets opened by a page
of another origin are refused. Every HTTP response carries a Content-Security-Policy without inline script. The
page writes all text with ``textContent``. Viewers are read-only: the only requests that change anything start or
end a session.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from core.broadcast.dashboard import DashboardData
from core.broadcast.fanout import FanOut
from core.broadcast.guard import COOKIE, SESSION_HOURS, Refusal, ViewerGuard, deny, same_origin
from core.broadcast.ingest import PRODUCER_PATH, Ingest
from core.errors import RunNotFoundError

log = logging.getLogger(__name__)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
READ_ONLY = "The dashboard is read-only."
Endpoint = Callable[[Request], Awaitable[Response]]


def hub_app(
    fanout: FanOut, guard: ViewerGuard, ingest: Ingest, dashboard: DashboardData | None, *, tls: bool
) -> ASGIApp:
    """The application a hub serves: sockets always, the dashboard when it has a database.

    Parameters
    ----------
    fanout
        Serves accepted viewer sockets.
    guard
        Decides who may view and signs browsers in.
    ingest
        Decides who may produce and reads their sockets.
    dashboard
        The runs the page lists and opens (``None``: no page, HTTP requests get a 404 saying so).
    tls
        Whether the page is served over https (the cookie is then ``Secure``).
    """

    async def viewer_socket(ws: WebSocket) -> None:
        refusal = await guard.check_viewer(_peer(ws), ws.headers, ws.cookies, ws.query_params.get("token"))
        if refusal is not None:
            await deny(ws, refusal)
            return
        await ws.accept()
        await fanout.serve(ws)

    async def unknown_socket(ws: WebSocket) -> None:
        await deny(ws, Refusal(404, "Unknown path; viewers connect to /.\n"))

    routes: list[BaseRoute] = [
        WebSocketRoute("/", viewer_socket),
        WebSocketRoute("/viewer", viewer_socket),
        WebSocketRoute(PRODUCER_PATH, ingest.endpoint),
        WebSocketRoute("/{path:path}", unknown_socket),
    ]
    if dashboard is None:
        routes.append(Route("/{path:path}", _no_dashboard, methods=None))
    else:
        routes += _dashboard_routes(guard, dashboard, tls)
    handlers = {404: _not_found, 405: _read_only}
    return SecurityHeaders(Starlette(routes=routes, exception_handlers=handlers))


def _dashboard_routes(guard: ViewerGuard, dashboard: DashboardData, tls: bool) -> list[BaseRoute]:
    async def sign_in(request: Request) -> Response:
        session = await guard.sign_in(_peer(request), request.headers)
        if isinstance(session, Refusal):
            return _text(session.status, session.text)
        return _cookie(session, SESSION_HOURS * 3600, tls)

    async def sign_out(request: Request) -> Response:
        guard.sessions.end(request.cookies.get(COOKIE))
        return _cookie("", 0, tls)

    async def whoami(request: Request) -> Response:
        return _json({"node": socket.gethostname()})

    async def runs(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if v}
        return _json({"runs": await dashboard.runs(params.get("mode"), params.get("status"), params.get("name"))})

    async def run(request: Request) -> Response:
        return _json(await dashboard.run(request.path_params["run_id"]))

    def signed(endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not guard.authorized(request.headers, request.cookies):
                return _text(401, "Sign in first.")
            try:
                return await endpoint(request)
            except RunNotFoundError as exc:
                return _text(404, str(exc))
            except Exception:
                log.exception("the dashboard could not read %s", request.url.path)
                return _text(503, "The node's database could not be read; see its log.")

        return guarded

    return [
        Route("/session", sign_in, methods=["POST"]),
        Route("/session", sign_out, methods=["DELETE"]),
        Route("/api/session", signed(whoami)),
        Route("/api/runs", signed(runs)),
        Route("/api/runs/{run_id:int}", signed(run)),
        Route("/api/{path:path}", signed(_api_not_found), methods=None),
        Mount("/", StaticFiles(directory=dashboard.root, html=True)),
    ]


class SecurityHeaders:
    """Refuses HTTP requests from pages of another origin, and adds the security headers to every response.

    Files under ``/vendor/`` carry their version in their folder name and are cached; everything else is
    revalidated (the app's own files change with PneumoFL), unless the response already says otherwise.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request's origin, then pass it on, adding the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cache = "max-age=86400, immutable" if scope["path"].startswith("/vendor/") else "no-cache"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = cache
            await send(message)

        if not same_origin(Request(scope).headers):
            await _text(403, "Requests from another site are refused.")(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _peer(connection: Request | WebSocket) -> str:
    return connection.client.host if connection.client else ""


def _text(status: int, text: str) -> Response:
    return PlainTextResponse(text.rstrip("\n") + "\n", status_code=status)


def _json(body: Any) -> Response:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _cookie(value: str, max_age: int, tls: bool) -> Response:
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", secure=tls, httponly=True, samesite="strict")
    return response


async def _no_dashboard(request: Request) -> Response:
    return _text(404, "This node serves live viewers only (pneumofl view).")


async def _api_not_found(request: Request) -> Response:
    return _text(404, "No such page.") if request.method == "GET" else _text(405, READ_ONLY)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _text(404, "No such page.")


async def _read_only(request: Request, exc: Exception) -> Response:
    return _text(405, READ_ONLY)
