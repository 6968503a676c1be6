"""The federation server's only public listener: TLS in front of a loopback SuperLink, forwarding the Fleet API only.

Flower 1.42's SuperLink serves Fleet, Control (run submission, unauthenticated in the open-source build) and
Runtime over HTTP on one port. We bind it to 127.0.0.1 and put this front on the public address. It forwards
``POST /v1/fleet/<method>`` with its body and headers unchanged, answers a site's app approval itself
(``POST /pneumofl/v1/approval``) and everything else with 404, without
contacting the SuperLink. SuperNode authentication survives the hop: the node signs only the ``flwr-timestamp``
header (``flwr-public-key`` and ``flwr-signature`` carry the key and signature), nothing host-bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from core.federated.app_trust import APPROVAL_PATH
from core.federated.http_thread import BackgroundServer, ServerStartError

logger = logging.getLogger(__name__)

# Fleet method names are one segment of lowercase letters, digits and dashes. Refusing dots, slashes and escapes
# means no path trick (``/v1/fleet/../control/start-run``, ``%2e%2e``) can reach another API.
_FLEET_PATH = re.compile(r"/v1/fleet/[a-z0-9-]+")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer"}
    | {"transfer-encoding", "upgrade"}
)
# Content-Length is recomputed for the forwarded message; Host names the front, not the SuperLink.
_DROP_REQUEST = _HOP_BY_HOP | {"host", "content-length"}
_DROP_RESPONSE = _HOP_BY_HOP | {"content-length"}
_MAX_APPROVAL_BYTES = 16_384
_UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=5.0)  # longer than Flower's 30 s client timeout


class FleetFrontError(RuntimeError):
    """The front cannot start; the message names the address and what to do."""


class FleetFront:
    """Serve the SuperLink's Fleet API on a public address, with TLS, from a background thread.

    Parameters
    ----------
    listen_host, listen_port : str, int
        Public address to listen on; port 0 picks a free one (see :attr:`port`).
    upstream_url : str
        The loopback SuperLink, e.g. ``"https://127.0.0.1:9092"``.
    certfile, keyfile : Path or None
        Server certificate and key; both None serves plain HTTP, allowed on loopback only (tests).
    upstream_ca : Path or None
        CA that signed the SuperLink's certificate, when ``upstream_url`` is https.
    tap : callable or None
        Called as ``tap(path, request_body, response_body)`` for every forwarded exchange, on the front's
        thread: what crosses the site boundary, for traffic accounting and audits. Must be quick.
    on_approval : callable or None
        Answers ``POST /pneumofl/v1/approval`` (a site's steward approval of the app, sent at join; see
        :mod:`core.federated.app_trust`): called with the body, returns ``(HTTP status, sentence)``. Never
        forwarded to the SuperLink. Called with the body and the request's headers (lower-case names), returns
        ``(HTTP status, sentence)``.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        upstream_url: str,
        certfile: Path | None,
        keyfile: Path | None,
        upstream_ca: Path | None = None,
        tap: Callable[[str, bytes, bytes], None] | None = None,
        on_approval: Callable[[bytes, dict[str, str]], tuple[int, str]] | None = None,
    ) -> None:
        self.tap, self.on_approval = tap, on_approval
        if (certfile is None) != (keyfile is None):
            raise ValueError("Give both a certificate and a key file for the fleet front, or neither.")
        if certfile is None and not _is_loopback(listen_host):
            raise ValueError(f"Refusing to serve the Fleet API without TLS on {listen_host}; give a certificate.")
        if not upstream_url.startswith(("http://", "https://")):
            raise ValueError(f"Upstream SuperLink URL must start with http:// or https://, got {upstream_url!r}.")
        self._host, self._port = listen_host, listen_port
        self._upstream = upstream_url.rstrip("/")
        self._certfile, self._keyfile, self._upstream_ca = certfile, keyfile, upstream_ca
        self._verify: ssl.SSLContext | bool = True
        self._client: httpx.AsyncClient | None = None
        self._server: BackgroundServer | None = None

    @property
    def port(self) -> int:
        """The port actually listened on once started (useful with port 0), else the one requested."""
        return self._server.port if self._server is not None else self._port

    def start(self, timeout: float = 10.0) -> None:
        """Start serving in a daemon thread and return once connections are accepted.

        Raises
        ------
        FleetFrontError
            If the address cannot be bound (e.g. the port is taken), the certificate cannot be loaded, or the
            server does not come up within ``timeout`` seconds.
        """
        if self._server is not None:
            return
        try:
            if self._upstream.startswith("https://") and self._upstream_ca is not None:
                self._verify = ssl.create_default_context(cafile=str(self._upstream_ca))
        except OSError as exc:  # ssl.SSLError is an OSError
            where = f"{self._host}:{self._port}"
            raise FleetFrontError(f"Cannot load the TLS files for the fleet front on {where}: {exc}") from exc
        server = BackgroundServer(
            Router(default=self._handle, lifespan=self._lifespan),
            self._host,
            self._port,
            "fleet front",
            certfile=self._certfile,
            keyfile=self._keyfile,
            ws="none",  # Flower's Fleet API is plain request/response
            proxy_headers=False,  # a client must not choose the address the SuperLink logs
            server_header=False,  # pass the SuperLink's own Server and Date headers through instead
            date_header=False,
        )
        try:
            server.start(timeout)
        except ServerStartError as exc:
            raise FleetFrontError(str(exc)) from exc
        self._server = server

    def stop(self) -> None:
        """Stop serving and join the thread; calling it again does nothing."""
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> FleetFront:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> AsyncIterator[None]:
        # Created in the server's loop, whose connections it pools. trust_env=False: never send loopback traffic
        # through an HTTP(S)_PROXY from the environment.
        async with httpx.AsyncClient(verify=self._verify, timeout=_UPSTREAM_TIMEOUT, trust_env=False) as client:
            self._client = client
            yield
        self._client = None

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method == "POST" and _FLEET_PATH.fullmatch(scope["path"]):
            response = await self._forward(request)
        elif request.method == "POST" and scope["path"] == APPROVAL_PATH and self.on_approval is not None:
            body = await request.body()
            if len(body) > _MAX_APPROVAL_BYTES:
                response = JSONResponse({"message": "The approval is too large."}, status_code=413)
            else:
                headers = {key.lower(): value for key, value in request.headers.items()}
                status, message = await asyncio.to_thread(self.on_approval, body, headers)
                response = JSONResponse({"message": message}, status_code=status)
        else:
            response = PlainTextResponse("Not found\n", status_code=404)
        await response(scope, receive, send)

    async def _forward(self, request: Request) -> Response:
        assert self._client is not None  # set by the lifespan before the first request
        headers = _without(request.headers.raw, _DROP_REQUEST, request.headers.get("connection", ""))
        content = await request.body()
        try:
            upstream_request = self._client.build_request(
                "POST", self._upstream + request.scope["path"], headers=headers, content=content
            )
            upstream = await self._client.send(upstream_request, stream=True)
            try:
                # Raw bytes: keep any Content-Encoding exactly as the SuperLink chose it.
                body = b"".join([chunk async for chunk in upstream.aiter_raw()])
            finally:
                await upstream.aclose()
        except httpx.TimeoutException:
            return PlainTextResponse("SuperLink timed out\n", status_code=504)
        except httpx.HTTPError as exc:
            logger.warning("Fleet front could not reach the SuperLink at %s: %s", self._upstream, exc)
            return PlainTextResponse("SuperLink unavailable\n", status_code=502)
        if self.tap is not None:
            try:
                self.tap(request.scope["path"], content, body)
            except Exception:
                logger.exception("fleet front tap failed")
        response = Response(body, status_code=upstream.status_code)
        response.raw_headers.extend(
            _without(upstream.headers.raw, _DROP_RESPONSE, upstream.headers.get("connection", ""))
        )
        return response


def _without(headers: list[tuple[bytes, bytes]], drop: frozenset[str], connection: str) -> list[tuple[bytes, bytes]]:
    """Drop the given headers and any that the Connection header names (they are hop-by-hop too)."""
    names = drop | {token.strip().lower() for token in connection.split(",")}
    return [(key, value) for key, value in headers if key.decode("latin-1").lower() not in names]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
