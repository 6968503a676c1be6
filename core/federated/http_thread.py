"""A Starlette/ASGI application served by uvicorn from a daemon thread of this process.

The fleet front (public, TLS) and the server's app hub (loopback) both run this way: the socket is bound here, in
the caller's thread, so a taken port or a bad certificate is a sentence for the caller, not a dead thread.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


class ServerStartError(RuntimeError):
    """The server cannot start; the message names the address and what to do."""


class BackgroundServer:
    """Serve ``app`` on ``host:port`` (0 picks a free port) from a daemon thread.

    Parameters
    ----------
    app
        The ASGI application.
    host, port
        Where to listen.
    name
        Shown in messages and as the thread's name ("fleet front", "app hub").
    certfile, keyfile
        TLS certificate and key; None serves plain HTTP.
    options
        Further ``uvicorn.Config`` settings.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        name: str,
        *,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        **options: Any,
    ) -> None:
        self.app, self.host, self.name = app, host, name
        self._port, self._certfile, self._keyfile = port, certfile, keyfile
        self._options = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 5} | options
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port actually listened on once started (useful with port 0), else the one requested."""
        return self._sock.getsockname()[1] if self._sock is not None else self._port

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None

    def start(self, timeout: float = 10.0) -> None:
        """Start serving and return once connections are accepted.

        Raises
        ------
        ServerStartError
            If the certificate cannot be loaded, the address cannot be bound, or the server does not come up
            within ``timeout`` seconds.
        """
        if self._thread is not None:
            return
        where = f"{self.host}:{self._port}"
        config = uvicorn.Config(
            self.app,
            ssl_certfile=str(self._certfile) if self._certfile else None,
            ssl_keyfile=str(self._keyfile) if self._keyfile else None,
            **self._options,
        )
        try:  # load certificates here, not in the server thread, so that a bad file raises to the caller
            config.load()
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ServerStartError(f"Cannot load the TLS files for the {self.name} on {where}: {exc}") from exc
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._sock = socket.create_server((self.host, self._port), family=family)
        except OSError as exc:
            raise ServerStartError(
                f"Cannot listen on {where}: {exc.strerror or exc}. Another program (or an earlier server) may be "
                "using the port; stop it or choose another port."
            ) from exc
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"The {self.name} on {where} did not start; see the log for the reason.")
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
