"""Flower's processes as children we own: SuperLink, SuperNode, and the ``flwr`` CLI.

Every child gets telemetry and update checks off, its own ``FLWR_HOME``, this environment's ``bin`` first on
PATH (Flower spawns its helpers by name) and, in ``PNEUMOFL_OWNER_PID``, the pid that owns the runs it records.
Stopping a child stops its whole process tree: Flower detaches its SuperExec into a new session, so the tree is
collected with psutil before anything is signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import platformdirs
import psutil

from core.errors import PneumoFLError

LOG_TAIL_CHARS = 4000
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Flower colours its log lines
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class FlowerProcessError(PneumoFLError):
    """A Flower process could not start or ended unexpectedly; the message names it and quotes its log."""


def flower_environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Flower child process."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env |= {
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PNEUMOFL_OWNER_PID": str(os.getpid()),
        # SuperExec polls for new app tasks every second by default: a round waits for it on every node.
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    return env | dict(extra or {})


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """A child process writing to a log file, stopped with its whole tree.

    Parameters
    ----------
    name
        Shown in messages ("SuperLink", "SuperNode site-1").
    command
        The argument list (the executable is looked up on the child's PATH).
    env
        The child's environment (see :func:`flower_environment`).
    log_path
        stdout and stderr go here.
    """

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name, self.command, self.log_path = name, list(command), log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            executable = str(Path(env["PATH"].split(os.pathsep)[0]) / command[0])
            argv = [executable if Path(executable).exists() else command[0], *command[1:]]
            try:
                self.popen = subprocess.Popen(
                    argv, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                raise FlowerProcessError(f"Cannot start the {name} ({argv[0]}): {exc}.") from exc
        self._tree: set[int] = {self.popen.pid}
        self.home = env.get("FLWR_HOME", "")
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.popen.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the child's log (for messages)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def descendants(self) -> list[psutil.Process]:
        """Every process below the child now (and those seen before that are still alive)."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(self.pid).children(recursive=True):
                found[proc.pid] = proc
        for pid in self._tree - set(found) - {self.pid}:
            with contextlib.suppress(psutil.Error):
                found[pid] = psutil.Process(pid)
        self._tree |= set(found)
        return list(found.values())

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the child and everything it started; kill what is left after ``timeout``. Idempotent."""
        tree = self.descendants()
        if self.alive():
            with contextlib.suppress(OSError):
                self.popen.send_signal(signal.SIGTERM)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, left = psutil.wait_procs(tree, timeout=timeout)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout)
        psutil.wait_procs(left, timeout=1.0)
        # A helper spawned while we were stopping was orphaned before we saw it: find it by its FLWR_HOME.
        strays = [p for p in flower_processes_under(self.home) if p.pid != os.getpid()] if self.home else []
        for proc in strays:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(strays, timeout=1.0)

    def kill(self) -> None:
        """SIGKILL the child alone (its children are left to notice), as a crash would. For fault tests."""
        self.descendants()
        self.popen.kill()
        self.popen.wait()


def flower_processes_under(folder: str | Path) -> list[psutil.Process]:
    """Running processes whose ``FLWR_HOME`` is inside ``folder``: every Flower process of the nodes under it."""
    root = Path(folder)
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            home = proc.environ().get("FLWR_HOME")
            if home and Path(home).is_relative_to(root) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def wait_for_port(host: str, port: int, process: ManagedProcess, timeout: float = 30.0) -> None:
    """Return once ``host:port`` accepts connections.

    Raises
    ------
    FlowerProcessError
        If ``process`` exits first or ``timeout`` passes, quoting the end of its log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise FlowerProcessError(
                f"The {process.name} exited (code {process.popen.returncode}) before listening on {host}:{port}. "
                f"Its log ({process.log_path}) ends with:\n{process.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise FlowerProcessError(
        f"The {process.name} did not listen on {host}:{port} within {timeout:.0f} s. "
        f"Its log ({process.log_path}) ends with:\n{process.log_tail()}"
    )


@atexit.register
def stop_all() -> None:
    """Stop every child still running: however this process ends normally, it leaves no Flower process behind."""
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            process.stop(timeout=3.0)


def log_text(process: ManagedProcess, chars: int = 1500) -> str:
    """The end of a Flower process's log without its colour codes."""
    return ANSI.sub("", process.log_tail(chars)).strip()


def reachable_address(host: str, port: int) -> str:
    """``host:port`` as a site should type it: a wildcard listen address becomes this machine's name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn() or socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fresh_work_dir(kind: str, root: Path | None = None) -> Path:
    """A new folder for one node's logs and Flower state: ``<root>/<kind>-<timestamp>``.

    ``root`` defaults to ``federation/`` in the user data dir.
    """
    root = root or Path(platformdirs.user_data_dir("pneumofl")) / "federation"
    return root / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
