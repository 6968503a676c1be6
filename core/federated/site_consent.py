"""A site's decision on a federation plan: its steward's policy first, then the site's consent, all audited.

The server sends the plan in a ``query`` message before the first round (its own wait, not a round's timeout).
The ClientApp only relays it (:mod:`core.federated.consent_channel`) to the site node's :class:`ConsentDesk`, a
thread of the long-lived process that owns the SuperNode (the app or ``pneumofl site join``). The desk checks the
plan against the policy and, within it, asks the site's user (a dialog in the app, a question on a terminal, a
refusal headless unless the site approves plans within its policy), audits the decision, keeps it for the run's
rounds and answers. Every training round checks the kept decision again against the plan it is sent, so a server
that skips the question trains nothing.

The limits a site counts itself (rounds per federation, epsilon per server) come from its own audit trail.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.audit import kinds
from core.audit.entries import entries
from core.audit.trail import record as audit
from core.audit.trail import record_safely
from core.errors import PneumoFLError
from core.federated.consent_channel import decision_path, write_json
from core.federated.plan_summary import (
    PlanSummary,
    federation_key,
    plan_epsilon,
    plan_hash,
    server_key,
    summarize_plan,
)
from core.federated.policy import (
    PolicyError,
    SitePolicy,
    default_policy,
    format_fingerprint,
    load_policy,
    normalize_fingerprint,
    policy_digest,
)
from core.federated.policy_check import PlanDecision, check_plan
from core.federated.settings import FederationConfig, SiteSettings
from core.persistence import Database

log = logging.getLogger(__name__)
APPROVE, DECLINE, APPROVE_WITHIN_POLICY = "approve", "decline", "approve-within-policy"
DECLINED = "Declined at the site."
_CHOICE_REASONS = {
    APPROVE: "Approved at the site.",
    APPROVE_WITHIN_POLICY: "Approved at the site; plans within the policy are approved from now on.",
}
HEADLESS_DECLINE = (
    "Declined: nobody at this site could approve the plan. Approve it in the app (Join as a site), answer the "
    "question on the terminal, or start the site with --approve-within-policy to approve plans within its policy."
)


class AuditLedger:
    """Rounds per federation and epsilon per server, summed from the site's ``round_trained`` audit entries."""

    def __init__(self, db_url: str) -> None:
        self.rounds: dict[str, int] = {}
        self.epsilon: dict[str, float] = {}
        db = Database.open(db_url, migrate=False)
        try:
            with db.begin() as session:
                for entry in entries(session, kinds=[kinds.ROUND_TRAINED]):
                    federation, server = entry.details.get("federation_key"), entry.details.get("server_key")
                    if federation:
                        self.rounds[federation] = self.rounds.get(federation, 0) + 1
                    if server and entry.details.get("epsilon"):
                        self.epsilon[server] = self.epsilon.get(server, 0.0) + float(entry.details["epsilon"])
        finally:
            db.close()

    def rounds_trained(self, federation_key: str) -> int:
        """Rounds this site trained for the federation, over all its runs."""
        return self.rounds.get(federation_key, 0)

    def epsilon_spent(self, server_key: str) -> float:
        """Epsilon the server spent at this site over all its runs."""
        return self.epsilon.get(server_key, 0.0)


def site_policy(site: SiteSettings) -> SitePolicy:
    """The site's policy (its safe defaults when it has no file)."""
    return load_policy(site.policy_file) if site.policy_file else default_policy()


def check_server_allowed(site: SiteSettings) -> None:
    """Refuse to join a server the policy does not allow (before anything connects); audit a changed policy.

    Raises
    ------
    PolicyError
        Naming the server, its CA fingerprint, the policy file and how the steward can allow it.
    """
    policy = site_policy(site)
    where = site.policy_file or "the default site policy"
    _note_policy(site, policy)
    if site.server_fingerprint:
        if normalize_fingerprint(site.server_fingerprint) not in policy.allowed_servers:
            raise PolicyError(
                f"This site's policy ({where}) does not allow the server at {site.server_address}: its CA "
                f"fingerprint {format_fingerprint(site.server_fingerprint)} is not in allowed_servers. If the data "
                "steward agrees, add it there (`pneumofl site policy init --allow-server ca.pem` writes it)."
            )
    elif not policy.allow_insecure_loopback:
        raise PolicyError(
            f"This site's policy ({where}) does not allow servers without TLS (allow_insecure_loopback = false)."
        )


def _note_policy(site: SiteSettings, policy: SitePolicy) -> None:
    """Audit the policy the site runs under whenever it differs from the one last recorded."""
    digest = policy_digest(policy)
    db = Database.open(site.db_url, migrate=False)
    try:
        with db.begin() as session:
            last = entries(session, kinds=[kinds.POLICY_CHANGED])
    finally:
        db.close()
    if not last or last[-1].details.get("policy_sha256") != digest:
        record_safely(
            site.db_url,
            kinds.POLICY_CHANGED,
            {"site": site.site_name, "policy_file": site.policy_file or "(defaults)", "policy_sha256": digest},
        )


def summarize(plan: FederationConfig, site: SiteSettings, policy: SitePolicy) -> PlanSummary:
    """What ``plan`` asks of this site, as the consent screen shows it."""
    host = site.server_address.rsplit(":", 1)[0].strip("[]")
    return summarize_plan(
        plan,
        server_name=site.server_address or "this machine",
        server_fingerprint=site.server_fingerprint or None,
        insecure_loopback=not site.server_fingerprint and host in ("127.0.0.1", "localhost", "::1", ""),
        policy=policy,
    )


@dataclass(frozen=True)
class PlanRecord:
    """The site's decision on one Flower run's plan, kept in the consent folder for the run's rounds."""

    flower_run_id: int
    plan_hash: str
    approved: bool
    reason: str
    asked: bool = False  # whether the site's user decided (not the policy alone)


Asker = Callable[[list[str], str], str]


def decide(
    plan: FederationConfig,
    site: SiteSettings,
    flower_run_id: int,
    asker: Asker | None,
    *,
    within_policy: bool = False,
    timeout: float = 600.0,
) -> PlanRecord:
    """Check ``plan`` against the policy, then ask for the site's consent; audit and keep the decision.

    Parameters
    ----------
    asker
        Puts a plan within policy to the site's user (lines, hash) and returns :data:`APPROVE`, :data:`DECLINE`
        or :data:`APPROVE_WITHIN_POLICY`; None declines with how to approve (a headless site).
    within_policy
        Approve plans within the policy without asking (the site said so, or runs unattended).
    timeout
        An answer later than this is too late: the server has moved on, so the plan counts as declined.

    Raises
    ------
    core.errors.PneumoFLError
        If the policy cannot be read or the decision cannot be audited (the caller declines).
    """
    started = time.monotonic()
    policy = site_policy(site)
    summary = summarize(plan, site, policy)
    verdict = check_plan(policy, summary, AuditLedger(site.db_url))
    asked = False
    if verdict.allowed and not (within_policy or site.approve_within_policy):
        choice = asker(summary.lines(), summary.plan_hash) if asker is not None else DECLINE
        asked = asker is not None
        if asker is None:
            verdict = PlanDecision(False, HEADLESS_DECLINE)
        elif time.monotonic() - started > timeout:
            verdict = PlanDecision(False, f"Declined: the answer came after the server's {timeout:.0f} s wait.")
        else:
            verdict = PlanDecision(choice in (APPROVE, APPROVE_WITHIN_POLICY), _CHOICE_REASONS.get(choice, DECLINED))
    elif verdict.allowed:
        verdict = PlanDecision(True, "Approved within the site's policy, unattended (approve plans within policy).")
    record = PlanRecord(flower_run_id, summary.plan_hash, verdict.allowed, verdict.reason, asked)
    details = {
        "site": site.site_name,
        "server": summary.server_name,
        "flower_run_id": flower_run_id,
        "federation": summary.federation,
        "plan_sha256": summary.plan_hash,
        "reason": record.reason,
    }
    db = Database.open(site.db_url, migrate=False)
    try:  # audited before it takes effect: a decision the trail cannot hold is no decision (the caller declines)
        audit(db, kinds.PLAN_APPROVED if record.approved else kinds.PLAN_DECLINED, details)
    finally:
        db.close()
    write_json(decision_path(_folder(site), flower_run_id), asdict(record))
    return record


def decision_for(site: SiteSettings, flower_run_id: int, plan: FederationConfig) -> PlanDecision:
    """Whether a training round of this run may start: the plan was approved, and it is still the same plan."""
    try:
        record = PlanRecord(**json.loads(decision_path(_folder(site), flower_run_id).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return PlanDecision(False, "The server sent no plan for this site to approve before training.")
    if not record.approved:
        return PlanDecision(False, record.reason)
    if plan_hash(plan, site.server_fingerprint or None) != record.plan_hash:
        return PlanDecision(False, "The plan changed after this site approved it.")
    return PlanDecision(True, record.reason)


class ConsentDesk:
    """Answers the plan questions of one site node's ClientApps, from a thread of the node's own process.

    Parameters
    ----------
    site
        The site's settings as its ClientApps read them (policy, consent folder, database).
    asker
        Puts a plan within the policy to the site's user (see :func:`decide`); None: a headless site.
    on_decided
        Called with every decision once it is audited and kept (the app leaves after a decline).
    """

    def __init__(
        self, site: SiteSettings, asker: Asker | None, on_decided: Callable[[PlanRecord], None] | None = None
    ) -> None:
        self.site, self.asker, self.on_decided = site, asker, on_decided
        self.folder = _folder(site)
        self.within_policy = False  # "approve plans within my policy from now on"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="consent-desk", daemon=True)

    def start(self) -> None:
        """Start answering."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.chmod(0o700)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering (a decision being recorded is finished first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            for request in sorted(self.folder.glob("run-*.request")):
                answer = request.with_suffix(".answer")
                if not answer.exists():
                    self._answer(request, answer)

    def _answer(self, request: Path, answer: Path) -> None:
        try:
            question = json.loads(request.read_text(encoding="utf-8"))
            flower_run_id = int(request.stem.removeprefix("run-"))
        except (OSError, ValueError):
            return  # not a request of ours
        asker = self._ask if self.asker is not None else None
        try:
            plan = FederationConfig.from_run_config(question["run_config"])
            record = decide(
                plan,
                self.site,
                flower_run_id,
                asker,
                within_policy=self.within_policy,
                timeout=float(question.get("consent_timeout", 600.0)),
            )
        except Exception as exc:
            log.exception("deciding on the plan of run %s failed", flower_run_id)
            reason = str(exc) if isinstance(exc, PneumoFLError) else "the site could not check the plan (see its log)"
            record = PlanRecord(flower_run_id, "", False, f"Declined: {reason}")
        write_json(answer, {"approved": record.approved, "reason": record.reason})
        request.unlink(missing_ok=True)
        if self.on_decided is not None:
            try:
                self.on_decided(record)
            except Exception:
                log.exception("reporting a plan decision failed")

    def _ask(self, lines: list[str], digest: str) -> str:
        assert self.asker is not None
        choice = self.asker(lines, digest)
        if choice == APPROVE_WITHIN_POLICY:
            self.within_policy = True
        return choice


def audit_round(
    site: SiteSettings, plan: FederationConfig, flower_run_id: int, round_number: int, arrays: Any, metrics: list[str]
) -> None:
    """Audit one trained round: what left the site, and what the round counts against the policy's limits.

    The weights' digest is Flower's own object id of the reply's arrays (SHA-256 of their content): Flower
    computes it to send them and keeps it, so the weights are hashed once.
    """
    # The ledger keys as the plan check reads them (PlanSummary.server_key/federation_key), without summarising the
    # plan: that builds the model to count its weights, which a round's fresh process would pay for every round.
    server = site.server_address or "this machine"
    identity = site.server_fingerprint or server
    epsilon = 0.0
    if plan.private:  # this round's share of the plan's budget: epsilon after it less epsilon before it
        before = (plan_epsilon(plan, round_number - 1) or 0.0) if round_number > 1 else 0.0
        epsilon = (plan_epsilon(plan, round_number) or 0.0) - before
    record_safely(
        site.db_url,
        kinds.ROUND_TRAINED,
        {
            "site": site.site_name,
            "server": server,
            "flower_run_id": flower_run_id,
            "round_number": round_number,
            "federation_key": federation_key(identity, plan.name),
            "server_key": server_key(identity),
            "weights_digest": arrays.object_id,
            "bytes_sent": sum(len(array.data) for array in arrays.values()),
            "metrics_sent": metrics,
            "epsilon": epsilon,
        },
    )


def _folder(site: SiteSettings) -> Path:
    if not site.consent_dir:
        raise ValueError("the site settings name no consent folder")
    return Path(site.consent_dir)
