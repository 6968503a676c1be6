"""A site's warm training worker: torch and Lightning imported once, the site's checked data kept in memory.

Flower starts a fresh ClientApp process for every message, and importing torch and Lightning costs seconds of
every round. The site node therefore owns one worker process per site (:class:`SiteWorker`) that has them loaded;
the ClientApp, which then imports neither, hands it the round (:func:`train_on_worker`) and relays the answer.

The channel is a TCP connection on 127.0.0.1 authenticated by :mod:`multiprocessing.connection`'s HMAC challenge
in both directions, on a 32-byte secret in the node's worker folder (0700, the file 0600): only processes of the
site's own user that read that file can drive the worker, and nothing is unpickled before both sides proved they
hold it. A worker that dies is started again by the node's watch thread; the round it died in fails by the site's
name (the ClientApp sees the connection close), and the next round waits for the new worker.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import secrets
import socket
import struct
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from core.federated.processes import ManagedProcess, flower_environment
from core.federated.settings import write_private_json

log = logging.getLogger(__name__)
KEY_FILE, ADDRESS_FILE = "worker.key", "worker-address.json"
SPAWNED_ENV = "PNEUMOFL_WORKER_SPAWNED"  # when the node started the worker (its start-up time is reported)
CONNECT_WAIT = 120.0  # seconds a round waits for a worker being (re)started: importing torch takes a while
HANDSHAKE_TIMEOUT = 10.0  # seconds a peer has to prove the secret and send its round


class WorkerUnavailable(RuntimeError):
    """The site's worker could not be reached, or stopped during the round."""


# ---------------------------------------------------------------------------------------------- the client side
def train_on_worker(
    folder: Path, request: dict[str, Any], timeout: float, connect_wait: float = CONNECT_WAIT
) -> dict[str, Any]:
    """Send one round to the site's worker and return its answer.

    Raises
    ------
    WorkerUnavailable
        If no worker answered within ``connect_wait`` seconds, or it stopped before replying in ``timeout``.
    """
    key = (folder / KEY_FILE).read_bytes()
    deadline = time.monotonic() + connect_wait
    while True:
        try:
            address = json.loads((folder / ADDRESS_FILE).read_text(encoding="utf-8"))
            connection = Client(("127.0.0.1", int(address["port"])), authkey=key)
            break
        except (OSError, ValueError, KeyError, EOFError) as exc:
            if time.monotonic() >= deadline:
                raise WorkerUnavailable(f"no training worker answered within {connect_wait:.0f} s ({exc})") from None
            time.sleep(0.2)
    with connection:
        try:
            connection.send(request)
            if not connection.poll(timeout):
                raise WorkerUnavailable(f"the training worker did not finish within {timeout:.0f} s")
            return dict(connection.recv())
        except (OSError, EOFError) as exc:
            raise WorkerUnavailable(
                f"the training worker stopped during the round ({exc or 'connection closed'})"
            ) from None


# ---------------------------------------------------------------------------------------------- the node side
class SiteWorker:
    """The worker process a site node owns, started again whenever it stops while the node runs.

    Parameters
    ----------
    folder
        The worker's folder (its secret and address); made 0700.
    env
        The worker's environment: the SuperNode's (site settings, live events, owner pid).
    log_path
        The worker's log.
    """

    def __init__(self, folder: Path, env: dict[str, str], log_path: Path) -> None:
        self.folder, self.env, self.log_path = folder, env, log_path
        self.process: ManagedProcess | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        """Write a fresh secret, start the worker and the thread that restarts it."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        descriptor = os.open(self.folder / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        self._spawn()
        self._watch = threading.Thread(target=self._restart_when_stopped, name="pneumofl-site-worker", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        (self.folder / ADDRESS_FILE).unlink(missing_ok=True)  # a round waits for the new worker's address
        command = [sys.executable, "-m", "core.federated.site_worker", str(self.folder)]
        extra = {SPAWNED_ENV: f"{time.time()}"}
        env = flower_environment(Path(self.env.get("FLWR_HOME", self.folder)), self.env | extra)
        self.process = ManagedProcess("training worker", command, env, self.log_path)

    def _restart_when_stopped(self) -> None:
        while not self._stop.wait(0.5):
            if self.process is not None and not self.process.alive():
                log.warning("the site's training worker stopped; starting it again")
                self.restarts += 1
                self._spawn()

    def alive(self) -> bool:
        """Whether the worker process runs."""
        return self.process is not None and self.process.alive()

    def kill(self) -> None:
        """Kill the worker at once with nobody to restart it, as a crash of its node would (fault tests)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=5)  # it may be starting a new worker right now
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        """Stop the watch and the worker (and anything it started)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
        if self.process is not None:
            self.process.stop()
        (self.folder / ADDRESS_FILE).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the worker
def serve(folder: Path) -> None:
    """The worker's main loop: import the training code, listen, answer one round at a time."""
    parent = os.getppid()
    from core.federated.worker_rounds import RoundRunner  # torch and Lightning: the reason this process exists

    spawned = float(os.environ.get(SPAWNED_ENV, "0") or 0)
    runner = RoundRunner(start_seconds=time.time() - spawned if spawned else None)
    key = (folder / KEY_FILE).read_bytes()
    one_round_at_a_time = threading.Lock()
    # No authkey here: the challenge runs in each connection's own thread (see _serve), so a peer that connects and
    # stays silent holds up nobody.
    with Listener(("127.0.0.1", 0)) as listener:
        write_private_json(folder / ADDRESS_FILE, {"port": listener.address[1], "pid": os.getpid()})
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
        log.info("training worker ready on %s", listener.address)
        while True:
            try:
                connection = listener.accept()
            except OSError as exc:
                log.warning("a connection to the training worker failed: %s", exc)
                continue
            args = (connection, key, runner, one_round_at_a_time)
            threading.Thread(target=_serve, args=args, name="pneumofl-worker-connection", daemon=True).start()


def _serve(connection: Connection, key: bytes, runner: Any, lock: threading.Lock) -> None:
    """Authenticate the peer both ways (nothing is unpickled before), then answer its one request."""
    with connection:
        _receive_timeout(connection, HANDSHAKE_TIMEOUT)
        try:
            deliver_challenge(connection, key)
            answer_challenge(connection, key)
            request = connection.recv()
        except (AuthenticationError, OSError, EOFError) as exc:  # no secret, or silent: refused
            log.warning("refused a connection to the training worker: %s", exc or type(exc).__name__)
            return
        with lock:
            _answer(connection, runner, request)


def _receive_timeout(connection: Connection, seconds: float) -> None:
    """Bound every receive on the connection's socket (SO_RCVTIMEO is per socket, so a duplicate sets it)."""
    with socket.socket(fileno=os.dup(connection.fileno())) as duplicate:
        duplicate.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(seconds), 0))


def _answer(connection: Connection, runner: Any, request: Any) -> None:
    reply = runner.run(request)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, in MiB (Linux reports KiB)
    reply["worker_rss_mb"] = rss_mb
    if "metrics" in reply:  # a round's numbers: shown per site and round at the server
        reply["metrics"]["worker_rss_mb"] = rss_mb
    try:
        connection.send(reply)
    except OSError:
        log.warning("the ClientApp left before the round's answer was sent")


def _exit_with_parent(parent: int) -> None:
    """A worker whose node died (killed, power cut) must not outlive it."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(Path(sys.argv[1]))
