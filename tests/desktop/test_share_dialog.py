"""Sharing from the app: the hub runs in the application's own qasync loop and serves real websockets viewers."""

import asyncio
import json
import socket

import qasync
from websockets.asyncio.client import connect

from core.broadcast.tokens import load_or_create_token
from desktop.gui.share_dialog import ConnectDialog, ShareDialog


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_share_dialog_serves_viewers_from_the_qt_loop_and_rotates_the_token(qtbot, qapp):
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    dialog = ShareDialog(None)
    qtbot.addWidget(dialog)
    port = free_port()
    dialog.port.setValue(port)
    changes = []
    dialog.sharing_changed.connect(changes.append)
    try:
        dialog.toggle_sharing()
        loop.run_until_complete(asyncio.sleep(0.3))
        assert dialog.hub is not None and dialog.hub.running and changes == [dialog.hub]
        assert dialog.url.text() == f"ws://127.0.0.1:{port}" and dialog.toggle.text() == "Stop sharing"
        token = dialog.token.text()
        assert token == load_or_create_token()

        async def hello(with_token):
            async with connect(dialog.url.text(), additional_headers={"Authorization": f"Bearer {with_token}"}) as ws:
                message = json.loads(await ws.recv())
            await asyncio.sleep(0.2)  # let the hub's handler finish inside the running loop
            return message

        assert loop.run_until_complete(hello(token))["type"] == "hello"
        dialog.rotate()
        assert dialog.token.text() != token
        assert loop.run_until_complete(hello(dialog.token.text()))["protocol"] == 1

        # A second dialog on the same port says why it cannot start.
        other = ShareDialog(None)
        qtbot.addWidget(other)
        other.port.setValue(port)
        other.toggle_sharing()
        loop.run_until_complete(asyncio.sleep(0.3))
        assert other.hub is None and f"Cannot listen on 127.0.0.1:{port}" in other.status.text()

        dialog.toggle_sharing()
        loop.run_until_complete(_until(lambda: not dialog.hub.running))  # uvicorn notices its exit flag in ticks
        assert not dialog.hub.running and dialog.toggle.text() == "Start sharing" and changes[-1] is None
    finally:
        if dialog.hub is not None and dialog.hub.running:
            loop.run_until_complete(dialog.hub.stop())
        asyncio.set_event_loop(None)
        loop.close()  # now, while the QApplication it signals through still exists


def test_connect_dialog_checks_its_fields(qtbot):
    dialog = ConnectDialog()
    qtbot.addWidget(dialog)
    dialog.url.setText("http://host:80")
    dialog.accept()
    assert "ws://host:8765" in dialog.error.text() and dialog.result() == 0
    dialog.url.setText("ws://127.0.0.1:8765")
    dialog.token.setText("")
    dialog.accept()
    assert "viewer token" in dialog.error.text()


async def _until(condition, timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds (a loaded machine may take more than a few ticks)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
