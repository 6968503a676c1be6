"""Site names by Flower node id, which Flower's own node list lacks.

The server node learns a site's node id when it enrols the site's key (``flwr supernode register`` answers with
it) and, in a local federation, from each SuperNode's log. It keeps them in a small JSON file that the ServerApp
reads, so a site that fails before it ever replied is still named, and the Server page lists sites by name.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class SiteNames:
    """A ``{node id: name}`` file, written by the node process and read by the ServerApp process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[int, str]:
        """Every name known so far (empty when the file is missing or unreadable)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {int(node): str(name) for node, name in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def add(self, node_id: int | str, name: str) -> None:
        """Remember ``name`` for ``node_id`` (written atomically: the ServerApp may be reading)."""
        with self._lock:
            names = self.read() | {int(node_id): name}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps({str(k): v for k, v in sorted(names.items())}), encoding="utf-8")
            partial.replace(self.path)
        log.info("site %s is Flower node %s", name, node_id)
