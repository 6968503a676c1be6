"""Another node's recorded runs, read over its dashboard API (``/api/runs``) with the viewer token.

What ``pneumofl view`` and the app's remote viewer use to open a run the node's hub is not streaming: any run in
that node's database. The documents are those of :mod:`core.persistence.snapshot`.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import numpy as np

from core.errors import PneumoFLError
from core.persistence.federation import FederationHistory, SiteReply
from core.persistence.history import RunHistory
from core.persistence.runs import RunRecord


class RemoteRuns:
    """The recorded runs of the node serving at ``url`` (``ws(s)://host:port``).

    Parameters
    ----------
    url
        The node's live address, as given to ``pneumofl view``.
    token
        Its viewer token (sent as ``Authorization: Bearer``).
    ssl_context
        For ``wss://`` with a private CA.
    """

    def __init__(self, url: str, token: str, ssl_context: ssl.SSLContext | None = None) -> None:
        base = url.rstrip("/")
        self.base = "https" + base[3:] if base.startswith("wss") else "http" + base[2:]
        self.token, self.ssl_context = token, ssl_context

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.ssl_context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace").strip()
            if exc.code == 401:
                raise PneumoFLError(
                    f"{self.base} refused the viewer token (run `pneumofl token show` there)."
                ) from None
            if exc.code == 404 and not text.startswith("Run"):
                raise PneumoFLError(f"{self.base} serves no recorded runs (it is an older PneumoFL).") from None
            raise PneumoFLError(f"{self.base}: {text or exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PneumoFLError(f"Cannot read the runs of {self.base}: {reason}.") from None

    def list(self) -> list[dict[str, Any]]:
        """Every run of the node, newest first (summaries)."""
        return list(self._get("/api/runs")["runs"])

    def snapshot(self, run_id: int) -> dict[str, Any]:
        """One run's charts as recorded now (see :func:`core.persistence.snapshot.run_snapshot`)."""
        return dict(self._get(f"/api/runs/{int(run_id)}"))


def history_from_snapshot(document: dict[str, Any]) -> RunHistory:
    """A remote run's snapshot as the :class:`RunHistory` the desktop dashboard draws."""
    history = RunHistory(run=_record(document["run"]))
    history.epoch_series = {name: _arrays(pair) for name, pair in (document.get("epochs") or {}).items()}
    history.batch_series = {name: _arrays(pair) for name, pair in (document.get("batch") or {}).items()}
    history.final_stats = dict(document.get("final_stats") or {})
    history.early_stopping_epoch = document.get("early_stopping_epoch")
    history.roc = document.get("roc")
    history.batch_loaded = True
    return history


def federation_from_snapshot(document: dict[str, Any]) -> FederationHistory | None:
    """A remote server run's federation (``None`` for other runs)."""
    federation = document.get("federation")
    if not federation:
        return None
    rounds = [
        row | {key: _time(row.get(key)) for key in ("start_time", "end_time")} for row in federation.get("rounds", [])
    ]
    replies = [SiteReply(**reply) for reply in federation.get("replies", [])]
    return FederationHistory(run=_record(document["run"]), rounds=rounds, replies=replies)


def _record(summary: dict[str, Any]) -> RunRecord:
    values = {field.name: summary.get(field.name) for field in dataclasses.fields(RunRecord)}
    values |= {
        "start_time": _time(summary.get("start_time")),
        "end_time": _time(summary.get("end_time")),
        "source_path": summary.get("source_path") or "",
        "config": summary.get("config") or {},
        "host": summary.get("host") or "",
        "pid": summary.get("pid") or 0,
    }
    return RunRecord(**values)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _arrays(pair: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = pair
    return np.asarray(xs, dtype=np.float64), np.array([np.nan if y is None else y for y in ys], dtype=np.float64)
