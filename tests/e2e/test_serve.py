"""`pneumofl train --serve` streams to real viewers: a websockets client and `pneumofl view --text`."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

from core.broadcast.tokens import load_or_create_token
from tests.imaging import write_folder_dataset

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_serves_live_events_to_viewers(tmp_path):
    data = write_folder_dataset(tmp_path / "xrays", per_class=12, size=32)
    env = os.environ | {
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PNEUMOFL_DB_URL": f"sqlite:///{tmp_path / 'runs.db'}",
    }
    token = load_or_create_token(tmp_path / "cfg" / "pneumofl" / "viewer-token")
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "desktop",
            "train",
            "--data",
            str(data),
            "--epochs",
            "40",
            "--patience",
            "0",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--no-progress",
            "--serve",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    viewer = None
    try:

        async def watch_two_epochs():
            deadline = time.monotonic() + 120
            while True:  # the hub starts once the dataset is checked
                try:
                    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
                    break
                except OSError:
                    assert time.monotonic() < deadline and trainer.poll() is None, trainer.stderr.read()
                    await asyncio.sleep(0.2)
            async with ws:
                hello = json.loads(await ws.recv())
                await ws.send(json.dumps({"type": "subscribe", "run_id": "current"}))
                seqs, epochs = [], []
                while len(epochs) < 2:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    if message["type"] == "events":
                        for envelope in message["events"]:
                            seqs.append(envelope["seq"])
                            if envelope["type"] == "epoch_end":
                                epochs.append(envelope["data"]["epoch"])
                return hello, seqs, epochs

        hello, seqs, epochs = asyncio.run(watch_two_epochs())
        assert hello["protocol"] == 1
        assert seqs == list(range(1, len(seqs) + 1)) and epochs == [1, 2]

        viewer = subprocess.Popen(
            [sys.executable, "-m", "desktop", "view", url, "--token", token, "--text"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen = []  # what the viewer said while we waited, for the failure message
        for line in viewer.stderr:  # wait until it follows the run
            seen.append(line)
            if line.startswith("[connected to") and "run" in line:
                break
        trainer.send_signal(2)  # Ctrl-C: the run stops, is recorded, viewers get training_end
        out, err = trainer.communicate(timeout=120)
        assert trainer.returncode == 130, err
        assert "cancelled" in out
        viewed, viewer_err = viewer.communicate(timeout=60)
        assert viewer.returncode == 0, "".join(seen) + viewer_err
        assert "epoch 1:" in viewed and "cancelled" in viewed  # replayed from the start, then the end
    finally:
        for proc in (trainer, viewer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_view_with_a_wrong_token_says_so(tmp_path):
    port = free_port()
    env = os.environ | {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}

    async def serve_and_view():
        from core.broadcast import BroadcastHub

        hub = BroadcastHub("127.0.0.1", port, "right-token")
        await hub.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "desktop",
                "view",
                hub.url,
                "--token",
                "wrong",
                "--text",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, err.decode()
        finally:
            await hub.stop()

    code, err = asyncio.run(serve_and_view())
    assert code == 2 and "token is wrong or was rotated" in err


def test_token_rotate_changes_the_token(tmp_path):
    env = os.environ | {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}

    def token(command):
        args = [sys.executable, "-m", "desktop", "token", command]
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout

    first = token("show").strip()
    rotated = token("rotate").splitlines()[0]
    assert rotated != first and token("show").strip() == rotated and len(rotated) >= 40
