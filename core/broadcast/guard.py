"""Who may connect: the viewer token, browser sessions, the Origin check and the slow-down after failed sign-ins.

Every decision is a plain function of the peer address and the request's headers (and cookies), so the web
application only asks and answers; :func:`deny` turns a refusal into the handshake's HTTP answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from core.broadcast.tokens import tokens_match

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

COOKIE = "pneumofl_session"
SESSION_HOURS = 12
FORGET_FAILURES_S = 600


class Refusal(NamedTuple):
    """Why a request is turned away: the HTTP status and a sentence for the person (or program) that sent it."""

    status: int
    text: str


async def deny(ws: WebSocket, refusal: Refusal) -> None:
    """Answer a WebSocket handshake with a plain HTTP response (the client sees its status and text)."""
    from starlette.responses import PlainTextResponse

    await ws.send_denial_response(PlainTextResponse(refusal.text, status_code=refusal.status))


def same_origin(headers: Mapping[str, str]) -> bool:
    """True unless the request names an Origin other than the host it was sent to (no Origin: not a browser page).

    A browser cannot hide where a page came from; a WebSocket or ``fetch`` opened by another site's page carries
    that site's origin, which is what cross-site WebSocket hijacking would use.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower() and parts.scheme in ("http", "https")


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, maybe with an IPv6 zone) is this machine."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class FailureThrottle:
    """Slows down an address after three failed attempts: 0.25 s, then doubling up to 8 s (forgotten after 10 min)."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}

    async def failed(self, peer: str) -> None:
        """Count a failure from ``peer`` and wait as long as its count asks."""
        count, last = self._failures.get(peer, (0, 0.0))
        count = count + 1 if time.monotonic() - last < FORGET_FAILURES_S else 1
        self._failures[peer] = (count, time.monotonic())
        if count > 3:
            await asyncio.sleep(min(0.25 * 2 ** (count - 4), 8.0))

    def succeeded(self, peer: str) -> None:
        """A right token resets the address's count."""
        self._failures.pop(peer, None)


class WebSessions:
    """Signed-in browsers: random ids, each valid while the token it was made with is still the token."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[float, str]] = {}  # id -> (expires, token fingerprint)

    def create(self, token: str) -> str:
        """A new session for a browser that presented ``token``."""
        now = time.time()
        for key in [k for k, (expires, _) in self._sessions.items() if expires <= now]:
            del self._sessions[key]
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (now + SESSION_HOURS * 3600, _fingerprint(token))
        return session

    def valid(self, session: str | None, token: str) -> bool:
        """Whether ``session`` is live and was made with the current ``token`` (a rotation signs everyone out)."""
        entry = self._sessions.get(session or "")
        return entry is not None and entry[0] > time.time() and secrets.compare_digest(entry[1], _fingerprint(token))

    def end(self, session: str | None) -> None:
        """Sign a browser out."""
        self._sessions.pop(session or "", None)


class ViewerGuard:
    """The viewer token of the moment, the browser sessions made with it, and the throttle for wrong guesses.

    Parameters
    ----------
    token
        The viewer token, or a callable returning the current one (so a rotation takes effect at once).
    """

    def __init__(self, token: str | Callable[[], str]) -> None:
        self.token_source = token
        self.sessions = WebSessions()
        self.throttle = FailureThrottle()

    @property
    def token(self) -> str:
        """The token viewers must present now."""
        return self.token_source() if callable(self.token_source) else self.token_source

    def signed_in(self, cookies: Mapping[str, str]) -> bool:
        """Whether the request carries a live session cookie."""
        return self.sessions.valid(cookies.get(COOKIE), self.token)

    def authorized(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None = None
    ) -> bool:
        """A browser's session cookie, or the token itself (Bearer header, or ``?token=`` for sockets)."""
        presented = bearer(headers) or query_token
        return tokens_match(presented, self.token) or self.signed_in(cookies)

    async def check_viewer(
        self, peer: str, headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None
    ) -> Refusal | None:
        """``None`` for a viewer socket that may open; else why not (a wrong token waits first, see the throttle)."""
        if not same_origin(headers):  # cross-site WebSocket hijacking: another site's page, our cookie
            return Refusal(403, "A page from another site may not open this socket.\n")
        if self.authorized(headers, cookies, query_token):
            self.throttle.succeeded(peer)
            return None
        await self.throttle.failed(peer)
        return Refusal(401, "Missing or wrong viewer token.\n")

    async def sign_in(self, peer: str, headers: Mapping[str, str]) -> str | Refusal:
        """A new session id for a right Bearer token, else the (throttled) refusal."""
        if not tokens_match(bearer(headers), self.token):
            await self.throttle.failed(peer)
            return Refusal(401, "Missing or wrong viewer token.\n")
        self.throttle.succeeded(peer)
        return self.sessions.create(self.token)


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
