"""A site's side of app trust: send its steward's approval to the server, and notice every app Flower refused.

Flower's SuperNode refuses an app it cannot verify with one ERROR line in its log and an error reply to the
server; nothing reaches the site's window. :class:`RefusalWatch` reads the SuperNode's log as it grows and turns
each refusal into one sentence (the server, the run and, where Flower names it, the app) for the site's user and
its audit trail.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.federated.app_trust import (
    APPROVAL_PATH,
    NODE_KEY_HEADER,
    NODE_SIGNATURE_HEADER,
    Approval,
    sign_with_node_key,
)
from core.federated.processes import FlowerProcessError

log = logging.getLogger(__name__)
_RUN = re.compile(r"\[RUN (\d+)")
_REFUSED = re.compile(r"FAB verification failed|The FAB could not be verified")


RETRY_EVERY_S = 2.0  # how often a site tries again a server that does not listen yet


def _unreachable(server_address: str, exc: Exception, waited: float) -> FlowerProcessError:
    after = f" (tried for {waited:.0f} s)" if waited else ""
    return FlowerProcessError(
        f"Could not send this site's app approval to the server at {server_address}{after}: {exc}. Check the "
        "address and that the server is running."
    )


def send_approval(
    server_address: str,
    approval: Approval,
    ca_file: Path | None,
    node_key: Path | None = None,
    timeout: float = 30.0,
    *,
    wait: float = 0.0,
    cancel: threading.Event | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> str:
    """POST the steward's approval to the server's fleet front; return the server's sentence.

    With the site's node key, the approval is signed with it: a server that enrols sites counts it only then.
    A site started before its server is normal for headless nodes: while nothing listens at ``server_address``,
    the approval is sent again every few seconds for up to ``wait`` seconds (``on_notice`` hears it once, and
    ``cancel`` stops it), as Flower's SuperNode does for its own connection.

    Raises
    ------
    FlowerProcessError
        When the server cannot be reached, is no PneumoFL server, or runs another PneumoFL version (the sentence
        names both). Other refusals (a site not enrolled) are returned as the server's sentence.
    """
    import httpx

    scheme = "https" if ca_file is not None else "http"
    url = f"{scheme}://{server_address}{APPROVAL_PATH}"
    body = approval.to_json().encode("utf-8")
    headers = {"content-type": "application/json"}
    if node_key is not None:
        headers[NODE_KEY_HEADER], headers[NODE_SIGNATURE_HEADER] = sign_with_node_key(body, node_key)
    deadline, told, cancel = time.monotonic() + wait, False, cancel or threading.Event()
    while True:
        try:
            reply = httpx.post(
                url,
                content=body,
                headers=headers,
                verify=str(ca_file) if ca_file is not None else False,
                timeout=timeout,
                trust_env=False,
            )
            break
        except httpx.ConnectError as exc:  # nothing listens there (yet): the server may still be starting
            if time.monotonic() >= deadline:
                raise _unreachable(server_address, exc, wait) from exc
            if not told and on_notice is not None:
                on_notice(f"The server at {server_address} does not answer yet; trying again for up to {wait:.0f} s.")
                told = True
            if cancel.wait(RETRY_EVERY_S):
                raise FlowerProcessError(f"Stopped before the server at {server_address} answered.") from None
        except httpx.HTTPError as exc:
            raise _unreachable(server_address, exc, 0.0) from exc
    try:
        message = str(reply.json().get("message", ""))
    except ValueError:
        message = reply.text.strip()[:300]
    if reply.status_code == 404 and not message:
        message = (
            f"The server at {server_address} does not take app approvals: it is not a PneumoFL server of this version."
        )
    if reply.status_code in (404, 409):  # not a PneumoFL server, or another version: joining cannot work
        raise FlowerProcessError(message or f"The server refused this site's approval (HTTP {reply.status_code}).")
    if reply.status_code != 200:
        # E.g. a site not enrolled yet: the SuperNode's own refusal (with the key's fingerprint) says what to do.
        log.warning("the server did not take this site's approval: %s", message)
    return message


class RefusalWatch:
    """Follows a SuperNode's log from a daemon thread and reports each app Flower refused, once per run.

    Parameters
    ----------
    log_path
        The SuperNode's log file.
    server
        The server's address, named in the sentence.
    on_refused
        Called with ``(flower run id, sentence)`` from the watch thread.
    interval
        Seconds between reads of the log.
    """

    def __init__(
        self, log_path: Path, server: str, on_refused: Callable[[int, str], None], interval: float = 0.5
    ) -> None:
        self.log_path, self.server, self.on_refused, self.interval = log_path, server, on_refused, interval
        self.refused: dict[int, str] = {}
        self._offset = 0
        self._last_run: int | None = None
        self._pending = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="app-refusal-watch", daemon=True)

    def start(self) -> None:
        """Begin following the log."""
        self._thread.start()

    def stop(self) -> None:
        """Read what is left of the log, then stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.poll()

    def poll(self) -> None:
        """Read the log's new lines (also called by the thread)."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return
        self._offset += len(chunk)
        lines = (self._pending + chunk.decode("utf-8", "replace")).split("\n")
        self._pending = lines.pop()  # an unfinished last line waits for the rest
        for line in lines:
            if found := _RUN.search(line):
                self._last_run = int(found.group(1))
            elif _REFUSED.search(line) and self._last_run is not None and self._last_run not in self.refused:
                sentence = (
                    f"This site refused run {self._last_run} from the server at {self.server}: its app is not one "
                    "this site's data steward approved (only PneumoFL's own federation app of this version, signed "
                    "by the steward's key, runs here). Nothing of it was installed or run."
                )
                self.refused[self._last_run] = sentence
                log.warning("%s", sentence)
                try:
                    self.on_refused(self._last_run, sentence)
                except Exception:
                    log.exception("reporting a refused app failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
