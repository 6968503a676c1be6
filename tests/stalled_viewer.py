"""A viewer that subscribes and then never reads: the worst client a hub can have."""

from __future__ import annotations

import base64
import json
import os
import socket
import time


def stalled_viewer(port: int, token: str, run_id: int | str = "current") -> socket.socket:
    """Open a WebSocket to the hub on 127.0.0.1:``port``, subscribe, and leave the socket unread.

    The receive buffer is made tiny *before* connecting, which turns off the kernel's window auto-tuning (up to
    32 MB on loopback here), so the hub really sees a full socket.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1024)
    assert b" 101 " in response.split(b"\r\n", 1)[0], response
    payload = json.dumps({"type": "subscribe", "run_id": run_id}).encode()
    mask = os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    time.sleep(0.1)
    return sock
