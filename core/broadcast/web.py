"""The browser dashboard, served by the hub on its own port: static pages, a session cookie, runs as JSON.

Plain HTTP requests reach :meth:`WebDashboard.respond` from the hub's handshake hook (``websockets`` answers
non-WebSocket requests there), so the page, its data and the live socket share one address and one TLS setup.

Security: the viewer token is exchanged once (``POST /session`` with ``Authorization: Bearer``) for a random
session id in an ``HttpOnly; SameSite=Strict`` cookie; the token is never in a URL or in page storage. Requests
from a page of another origin are refused (the Origin header must name this host). Every response carries a
Content-Security-Policy without inline script. The page writes all text with ``textContent``. Viewers are read-
only: the only requests that change anything start or end a session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from core.broadcast.tokens import tokens_match
from core.errors import RunNotFoundError

log = logging.getLogger(__name__)
COOKIE = "pneumofl_session"
SESSION_HOURS = 12
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_RUN_PATH = re.compile(r"^/api/runs/(\d+)$")
Refuse = Callable[[ServerConnection, str, str], Awaitable[Response]]


def default_web_root() -> Path | None:
    """The dashboard's static files shipped with PneumoFL, if present.

    They are ``resources/web`` next to ``core/`` in a checkout, an installed wheel and the frozen bundle alike.
    """
    candidate = Path(__file__).resolve().parents[2] / "resources" / "web"
    return candidate if (candidate / "index.html").is_file() else None


class WebSessions:
    """Signed-in browsers: random ids, each valid while the token it was made with is still the token."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[float, str]] = {}  # id -> (expires, token fingerprint)

    def create(self, token: str) -> str:
        """A new session for a browser that presented ``token``."""
        self._forget_expired()
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (time.time() + SESSION_HOURS * 3600, _fingerprint(token))
        return session

    def valid(self, session: str | None, token: str) -> bool:
        """Whether ``session`` is live and was made with the current ``token`` (a rotation signs everyone out)."""
        entry = self._sessions.get(session or "")
        return entry is not None and entry[0] > time.time() and secrets.compare_digest(entry[1], _fingerprint(token))

    def end(self, session: str | None) -> None:
        """Sign a browser out."""
        self._sessions.pop(session or "", None)

    def _forget_expired(self) -> None:
        now = time.time()
        for key in [k for k, (expires, _) in self._sessions.items() if expires <= now]:
            del self._sessions[key]


class WebDashboard:
    """Answers the browser's HTTP requests for one hub.

    Parameters
    ----------
    root
        The static files (``index.html``, scripts, styles, vendored libraries).
    db_url
        The database whose runs the page lists and opens (read-only).
    token
        Returns the viewer token of the moment.
    live_runs
        Returns ``{run_id: {"first_seq", "last_seq", ...}}`` of the runs the hub is streaming.
    refuse
        The hub's answer to a failed sign-in (401, slowed down after repeated failures from one address).
    tls
        Whether the page is served over https (the cookie is then ``Secure``).
    """

    def __init__(
        self,
        root: Path,
        db_url: str,
        token: Callable[[], str],
        live_runs: Callable[[], dict[int, dict[str, Any]]],
        refuse: Refuse,
        *,
        tls: bool = False,
    ) -> None:
        self.root, self.db_url, self.token, self.live_runs = root.resolve(), db_url, token, live_runs
        self.refuse, self.tls = refuse, tls
        self.sessions = WebSessions()
        self._db: Any = None

    # ------------------------------------------------------------------ authentication
    def session_of(self, headers: Headers) -> str | None:
        """The session id in the request's cookie, if any."""
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no session
            return None
        morsel = cookie.get(COOKIE)
        return morsel.value if morsel is not None else None

    def signed_in(self, headers: Headers) -> bool:
        """Whether the request carries a live session cookie."""
        return self.sessions.valid(self.session_of(headers), self.token())

    def authorized(self, headers: Headers) -> bool:
        """A browser's session cookie, or the token itself as a Bearer header (``pneumofl view``, the app)."""
        auth = headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        return self.signed_in(headers) or (bearer is not None and tokens_match(bearer, self.token()))

    # ------------------------------------------------------------------ requests
    async def respond(self, connection: ServerConnection, request: Request, peer: str) -> Response:
        """The response to one plain HTTP request."""
        path = urlsplit(request.path).path
        if not same_origin(request.headers):
            return self._text(connection, HTTPStatus.FORBIDDEN, "Requests from another site are refused.")
        if path == "/session":
            return await self._session(connection, request, peer)
        if path.startswith("/api/"):
            if not self.authorized(request.headers):
                return self._text(connection, HTTPStatus.UNAUTHORIZED, "Sign in first.")
            if request.method != "GET":
                return self._text(connection, HTTPStatus.METHOD_NOT_ALLOWED, "The dashboard is read-only.")
            return await self._api(connection, path, urlsplit(request.path).query)
        if request.method != "GET":
            return self._text(connection, HTTPStatus.METHOD_NOT_ALLOWED, "The dashboard is read-only.")
        return self._static(connection, "/index.html" if path == "/" else path)

    async def _session(self, connection: ServerConnection, request: Request, peer: str) -> Response:
        if request.method == "DELETE":
            self.sessions.end(self.session_of(request.headers))
            return self._with_cookie(connection, HTTPStatus.NO_CONTENT, "", max_age=0)
        if request.method != "POST":
            return self._text(connection, HTTPStatus.METHOD_NOT_ALLOWED, "POST with the viewer token to sign in.")
        auth = request.headers.get("Authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if not tokens_match(presented, self.token()):
            return await self.refuse(connection, peer, "Missing or wrong viewer token.\n")
        session = self.sessions.create(self.token())
        return self._with_cookie(connection, HTTPStatus.NO_CONTENT, session, max_age=SESSION_HOURS * 3600)

    async def _api(self, connection: ServerConnection, path: str, query: str) -> Response:
        if path == "/api/session":
            return self._json(connection, {"node": socket.gethostname()})
        try:
            if path == "/api/runs":
                params = {k: v[0] for k, v in parse_qs(query).items() if v and v[0]}
                runs = await asyncio.to_thread(self._runs, params)
                return self._json(connection, {"runs": runs})
            found = _RUN_PATH.match(path)
            if found:
                return self._json(connection, await asyncio.to_thread(self._run, int(found.group(1))))
        except RunNotFoundError as exc:
            return self._text(connection, HTTPStatus.NOT_FOUND, str(exc))
        except Exception:
            log.exception("the dashboard could not read %s", path)
            return self._text(
                connection, HTTPStatus.SERVICE_UNAVAILABLE, "The node's database could not be read; see its log."
            )
        return self._text(connection, HTTPStatus.NOT_FOUND, "No such page.")

    def _database(self) -> Any:
        if self._db is None:
            from core.persistence import Database

            self._db = Database.open(self.db_url, migrate=False)
        return self._db

    def _runs(self, params: dict[str, str]) -> list[dict[str, Any]]:
        from core.persistence.snapshot import run_summaries

        with self._database().begin() as session:
            return run_summaries(session, mode=params.get("mode"), status=params.get("status"), name=params.get("name"))

    def _run(self, run_id: int) -> dict[str, Any]:
        from core.persistence.snapshot import run_snapshot

        live = self.live_runs().get(run_id)  # taken before the database: the live replay overlaps the snapshot
        with self._database().begin() as session:
            document = run_snapshot(session, run_id)
        document["live"] = {"known": live is not None} | (live or {})
        return document

    # ------------------------------------------------------------------ responses
    def _static(self, connection: ServerConnection, path: str) -> Response:
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return self._text(connection, HTTPStatus.NOT_FOUND, "No such page.")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            kind = "text/javascript"
        response = self._response(connection, HTTPStatus.OK, target.read_bytes(), kind)
        # The app's own files change with PneumoFL; vendored ones carry their version in their folder name.
        cache = "max-age=86400, immutable" if "/vendor/" in path else "no-cache"
        response.headers["Cache-Control"] = cache
        return response

    def _json(self, connection: ServerConnection, body: Any) -> Response:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        response = self._response(connection, HTTPStatus.OK, data, "application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _text(self, connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
        return self._response(connection, status, (text.rstrip("\n") + "\n").encode(), "text/plain; charset=utf-8")

    def _with_cookie(self, connection: ServerConnection, status: HTTPStatus, value: str, *, max_age: int) -> Response:
        response = self._response(connection, status, b"", "text/plain; charset=utf-8")
        secure = "; Secure" if self.tls else ""
        response.headers["Set-Cookie"] = (
            f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    def _response(self, connection: ServerConnection, status: HTTPStatus, body: bytes, kind: str) -> Response:
        response = connection.respond(status, "")
        response.body = body
        headers = response.headers
        del headers["Content-Length"]
        del headers["Content-Type"]
        headers["Content-Type"] = (
            kind if "charset" in kind or not kind.startswith("text/") else f"{kind}; charset=utf-8"
        )
        headers["Content-Length"] = str(len(body))
        headers["Content-Security-Policy"] = CSP
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        return response

    def close(self) -> None:
        """Release the database connection."""
        if self._db is not None:
            self._db.close()
            self._db = None


def same_origin(headers: Headers) -> bool:
    """True unless the request names an Origin other than the host it was sent to (no Origin: not a browser page).

    A browser cannot hide where a page came from; a WebSocket or ``fetch`` opened by another site's page carries
    that site's origin, which is what cross-site WebSocket hijacking would use.
    """
    origin = headers.get("Origin")
    if origin is None:
        return True
    host = headers.get("Host", "")
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower() and parts.scheme in ("http", "https")


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
