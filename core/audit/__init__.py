"""The tamper-evident audit trail: who did what on this node, hash-chained in the node's database.

Append with :func:`record` (security-relevant actions: a failure stops them) or :func:`record_safely` (actions
that must go on whatever happens to auditing). Read with :func:`entries`, check with :func:`verify`, hand over
with :func:`export_jsonl`. The kinds are in :mod:`core.audit.kinds`; the key that signs the chain's head lives
outside the database (:mod:`core.audit.key`).
"""

from core.audit import kinds
from core.audit.entries import AuditEntry, entries, export_jsonl, iter_entries
from core.audit.trail import record, record_safely
from core.audit.verify import VerifyResult, verify

__all__ = [
    "AuditEntry",
    "VerifyResult",
    "entries",
    "export_jsonl",
    "iter_entries",
    "kinds",
    "record",
    "record_safely",
    "verify",
]
