"""The ClientApp's line to its site node: a plan question in, the site's answer out, through the node's folder.

A ClientApp is a fresh Flower process per message; the site's policy, its steward's ledger and the site's user are
with the long-lived site node (:class:`core.federated.site_consent.ConsentDesk`). The ClientApp writes the plan it
received as a request file in the node's consent folder (mode 0700, the site user's only) and waits for the answer
file; it imports nothing heavy, so the question costs a site a process start and no more.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from core.federated.settings import write_private_json as write_json


def request_path(folder: Path, flower_run_id: int) -> Path:
    """Where the question about one Flower run's plan is written."""
    return folder / f"run-{flower_run_id}.request"


def answer_path(folder: Path, flower_run_id: int) -> Path:
    """Where the site node writes its answer."""
    return folder / f"run-{flower_run_id}.answer"


def decision_path(folder: Path, flower_run_id: int) -> Path:
    """Where the site node keeps its decision for the run's training rounds."""
    return folder / f"run-{flower_run_id}.decision"


def ask_site_node(folder: Path, flower_run_id: int, run_config: dict[str, Any], timeout: float) -> tuple[bool, str]:
    """Put the plan to the site node and wait for its answer: ``(approved, reason)``."""
    answer = answer_path(folder, flower_run_id)
    answer.unlink(missing_ok=True)  # a resubmitted run with the same id is asked again
    write_json(request_path(folder, flower_run_id), {"run_config": run_config, "consent_timeout": timeout})
    deadline = time.monotonic() + timeout + 5.0  # the node itself gives up at `timeout`; this is its reply's slack
    while time.monotonic() < deadline:
        try:
            reply = json.loads(answer.read_text(encoding="utf-8"))
            return bool(reply["approved"]), str(reply["reason"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    return False, (
        f"Declined: the site node did not answer within {timeout:.0f} s (is `pneumofl site join` or the app still "
        "running?)."
    )
