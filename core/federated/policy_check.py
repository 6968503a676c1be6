"""Check a federation plan against this site's policy, counting what earlier runs already used.

Rounds are counted per federation and privacy loss per server over all their runs, so a server cannot get past
a limit by resubmitting a plan or starting a new federation. The counts come from a :class:`Ledger`: the audit
trail's in production, :class:`InMemoryLedger` in tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from core.federated.plan_summary import PlanSummary
from core.federated.policy import SitePolicy, format_fingerprint


class Ledger(Protocol):
    """What this site already gave: rounds per federation and epsilon per server (see the keys in plan_summary)."""

    def rounds_trained(self, federation_key: str) -> int:
        """Rounds this site has trained for the federation, over all its runs."""
        ...

    def epsilon_spent(self, server_key: str) -> float:
        """Epsilon the server has spent at this site, summed over all its runs with differential privacy."""
        ...


@dataclass
class InMemoryLedger:
    """A :class:`Ledger` kept in dictionaries (for tests and one-off checks)."""

    rounds: dict[str, int] = field(default_factory=dict)
    epsilon: dict[str, float] = field(default_factory=dict)

    def rounds_trained(self, federation_key: str) -> int:
        """Rounds recorded for ``federation_key``."""
        return self.rounds.get(federation_key, 0)

    def epsilon_spent(self, server_key: str) -> float:
        """Epsilon recorded for ``server_key``."""
        return self.epsilon.get(server_key, 0.0)

    def record(self, summary: PlanSummary, rounds: int, epsilon: float = 0.0) -> None:
        """Add ``rounds`` trained for ``summary``'s federation and ``epsilon`` spent by its server."""
        self.rounds[summary.federation_key] = self.rounds_trained(summary.federation_key) + rounds
        self.epsilon[summary.server_key] = self.epsilon_spent(summary.server_key) + epsilon


@dataclass(frozen=True)
class PlanDecision:
    """Whether the site trains the plan, and one sentence saying why (naming the limit when it declines)."""

    allowed: bool
    reason: str


def check_plan(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> PlanDecision:
    """Decide whether this site may train ``summary``'s plan; the first limit it breaks declines it.

    Parameters
    ----------
    policy
        This site's policy.
    summary
        The plan, from :func:`core.federated.plan_summary.summarize_plan`.
    ledger
        Rounds and epsilon this site already gave (before this plan).

    Returns
    -------
    PlanDecision
        ``allowed`` and a sentence naming the plan's value and the policy's (or what was checked).
    """
    for check in _CHECKS:
        reason = check(policy, summary, ledger)
        if reason:
            return PlanDecision(False, reason)
    trained = ledger.rounds_trained(summary.federation_key)
    allowed = (
        f"Federation '{summary.federation}' from server {summary.server_name} is within this site's policy: "
        f"{summary.rounds} rounds ({trained} of {policy.max_rounds} already trained)"
    )
    if summary.epsilon is not None:
        spent = ledger.epsilon_spent(summary.server_key)
        allowed += f", epsilon {summary.epsilon:.3g} ({spent:.3g} of {policy.max_epsilon:g} already spent)"
    return PlanDecision(True, allowed + ".")


def _server(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    if summary.server_fingerprint and summary.server_fingerprint in policy.allowed_servers:
        return ""
    if summary.insecure_loopback:
        if policy.allow_insecure_loopback:
            return ""
        return (
            f"Server {summary.server_name} runs on this machine without TLS; this site's policy sets "
            "allow_insecure_loopback = false."
        )
    if not summary.server_fingerprint:
        return (
            f"Server {summary.server_name} has no TLS, so no CA fingerprint; this site's policy trains only for "
            f"servers whose CA fingerprint is in allowed_servers ({len(policy.allowed_servers)} listed)."
        )
    return (
        f"Server {summary.server_name} has CA fingerprint {format_fingerprint(summary.server_fingerprint)}, which is not in this site's "
        f"policy's allowed_servers ({len(policy.allowed_servers)} listed); the data steward must list it first."
    )


def _model(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    if summary.backbone in policy.allowed_models:
        return ""
    return (
        f"The plan trains a {summary.backbone}; this site's policy allows only "
        f"{_choices(policy.allowed_models)} (allowed_models)."
    )


def _strategy(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    if summary.strategy in policy.allowed_strategies:
        return ""
    return (
        f"The plan combines updates with {summary.strategy}; this site's policy allows only "
        f"{_choices(policy.allowed_strategies)} (allowed_strategies)."
    )


def _local_epochs(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    if summary.local_epochs <= policy.max_local_epochs:
        return ""
    return (
        f"The plan asks for {summary.local_epochs} local epochs per round; this site's policy allows at most "
        f"{policy.max_local_epochs} (max_local_epochs)."
    )


def _rounds(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    trained = ledger.rounds_trained(summary.federation_key)
    if trained + summary.rounds <= policy.max_rounds:
        return ""
    return (
        f"The plan asks for {summary.rounds} rounds of federation '{summary.federation}'; this site's policy allows "
        f"{policy.max_rounds} per federation ({trained} already trained)."
    )


def _dp(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    if policy.require_dp and not summary.private:
        return "The plan has no differential privacy (dp noise 0); this site's policy requires it (require_dp = true)."
    if summary.dp_noise < policy.min_dp_noise:
        return (
            f"The plan's differential-privacy noise multiplier is {summary.dp_noise:g}; this site's policy requires "
            f"at least {policy.min_dp_noise:g} (min_dp_noise)."
        )
    return ""


def _epsilon(policy: SitePolicy, summary: PlanSummary, ledger: Ledger) -> str:
    if summary.epsilon is None:
        return ""
    spent = ledger.epsilon_spent(summary.server_key)
    # Adding epsilons over runs is basic composition: an upper bound on the privacy loss, never an underestimate.
    total = spent + summary.epsilon
    if math.isfinite(total) and total <= policy.max_epsilon:
        return ""
    return (
        f"The plan would spend epsilon {summary.epsilon:.3g} (delta {summary.dp_delta:g}) with server "
        f"{summary.server_name}; this site's policy allows {policy.max_epsilon:g} per server ({spent:.3g} already "
        "spent)."
    )


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "none"


_CHECKS: tuple[Callable[[SitePolicy, PlanSummary, Ledger], str], ...] = (
    _server,
    _model,
    _strategy,
    _local_epochs,
    _rounds,
    _dp,
    _epsilon,
)
