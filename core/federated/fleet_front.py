"""The federation server's only public listener: TLS in front of a loopback SuperLink, forwarding the Fleet API only.

Flower 1.42's SuperLink serves Fleet, Control (run submission, unauthenticated in the open-source build) and
Runtime over HTTP on one port. We bind it to 127.0.0.1 and put this front on the public address. It forwards
``POST /v1/fleet/<method>`` with its body and headers unchanged and answers everything else with 404, without
contacting the SuperLink. SuperNode authentication survives the hop: the node signs only the ``flwr-timestamp``
header (``flwr-public-key`` and ``flwr-signature`` carry the key and signature), nothing host-bound.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

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
    ) -> None:
        self.tap = tap
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
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port actually listened on once started (useful with port 0), else the one requested."""
        return self._sock.getsockname()[1] if self._sock is not None else self._port

    def start(self, timeout: float = 10.0) -> None:
        """Start serving in a daemon thread and return once connections are accepted.

        Raises
        ------
        FleetFrontError
            If the address cannot be bound (e.g. the port is taken), the certificate cannot be loaded, or the
            server does not come up within ``timeout`` seconds.
        """
        if self._thread is not None:
            return
        where = f"{self._host}:{self._port}"
        config = uvicorn.Config(
            Router(default=self._handle, lifespan=self._lifespan),
            log_level="warning",
            access_log=False,
            ws="none",  # Flower's Fleet API is plain request/response
            proxy_headers=False,  # a client must not choose the address the SuperLink logs
            server_header=False,  # pass the SuperLink's own Server and Date headers through instead
            date_header=False,
            timeout_graceful_shutdown=5,
            ssl_certfile=str(self._certfile) if self._certfile else None,
            ssl_keyfile=str(self._keyfile) if self._keyfile else None,
        )
        try:  # load certificates here, not in the server thread, so that a bad file raises to the caller
            config.load()
            if self._upstream.startswith("https://") and self._upstream_ca is not None:
                self._verify = ssl.create_default_context(cafile=str(self._upstream_ca))
        except OSError as exc:  # ssl.SSLError is an OSError
            raise FleetFrontError(f"Cannot load the TLS files for the fleet front on {where}: {exc}") from exc
        try:
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            self._sock = socket.create_server((self._host, self._port), family=family)
        except OSError as exc:
            raise FleetFrontError(
                f"Cannot listen on {where}: {exc.strerror or exc}. Another program (or an earlier server) may be "
                "using the port; stop it or choose another port."
            ) from exc
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), name="fleet-front", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise FleetFrontError(f"The fleet front on {where} did not start; see the log for the reason.")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and join the thread; calling it again does nothing."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

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
