"""An ASGI application served by uvicorn inside the caller's running asyncio loop (qasync in the desktop).

The socket is bound here, before serving, so a taken port is an :class:`OSError` for the caller (uvicorn itself
would exit the process). uvicorn leaves the host program's signals alone: Ctrl-C stays the CLI's to handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol

CLOSE_TIMEOUT_S = 2.0


class _WebSocketProtocol(WebSocketProtocol):
    """uvicorn's ``websockets`` protocol with a 2 s close timeout.

    Its send waits while the socket's buffers are full, which the fan-out's back-pressure needs (the sans-I/O
    protocol buffers without bound). The short timeout drops a viewer closed for being too slow in seconds (each of
    the close's three waits would otherwise take 10 s).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = CLOSE_TIMEOUT_S
        self._one_drain = asyncio.Lock()

    async def drain(self) -> None:
        """Wait for room in the socket's buffers, one writer at a time.

        websockets' legacy protocol lets only one writer wait on a full socket (a second fails an assertion): the
        fan-out's sender, keepalive pings and close frames take turns.
        """
        async with self._one_drain:
            await super().drain()


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the program that hosts the hub owns its signals
        yield


class LoopServer:
    """Serve ``app`` on ``host:port`` (0 picks a free port) from the running loop.

    Parameters
    ----------
    app
        The ASGI application.
    host, port
        Where to listen.
    ssl_context
        Serve TLS with this context.
    options
        Further ``uvicorn.Config`` settings (WebSocket limits, keep-alive pings).
    """

    def __init__(
        self, app: ASGIApp, host: str, port: int, ssl_context: ssl.SSLContext | None = None, **options: Any
    ) -> None:
        self.app, self.host, self.port, self.ssl_context = app, host, port, ssl_context
        self._options = {
            "ws": _WebSocketProtocol,
            "proxy_headers": False,  # no proxy in front: the peer is the socket's (the producer path's loopback check)
            "server_header": False,
            "log_level": "warning",
            "access_log": False,
            "log_config": None,
        } | options
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    async def start(self) -> None:
        """Bind, then serve in the running loop; returns once connections are accepted.

        Raises
        ------
        OSError
            If the address cannot be bound (in use, not local, no permission).
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, **self._options)
        config.load()
        config.ssl = self.ssl_context  # a context made by the caller, not files uvicorn would load
        server = _QuietServer(config)
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise OSError(f"the server on {self.host}:{self.port} stopped at once")
            await asyncio.sleep(0.005)
        self._server = server

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._server = self._task = None
