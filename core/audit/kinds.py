"""The kinds of audit entries: what happened, as one stable lowercase word each.

Kinds are stored in the trail and filtered on by ``pneumofl audit show --kind``: never rename one, only add.
"""

from __future__ import annotations

SITE_JOINED = "site_joined"
SITE_LEFT = "site_left"
APP_REFUSED = "app_refused"
PLAN_APPROVED = "plan_approved"
PLAN_DECLINED = "plan_declined"
ROUND_TRAINED = "round_trained"
MODEL_EXPORTED = "model_exported"
IMAGES_READ = "images_read"
TOKEN_ROTATED = "token_rotated"
POLICY_CHANGED = "policy_changed"
RUN_NOT_SUBMITTED = "run_not_submitted"
RUN_SUBMITTED = "run_submitted"
PACS_QUERIED = "pacs_queried"
PACS_RETRIEVED = "pacs_retrieved"
RESULTS_STORED = "results_stored"

KINDS: tuple[str, ...] = (
    SITE_JOINED,
    SITE_LEFT,
    APP_REFUSED,
    PLAN_APPROVED,
    PLAN_DECLINED,
    ROUND_TRAINED,
    MODEL_EXPORTED,
    IMAGES_READ,
    TOKEN_ROTATED,
    POLICY_CHANGED,
    RUN_NOT_SUBMITTED,
    RUN_SUBMITTED,
    PACS_QUERIED,
    PACS_RETRIEVED,
    RESULTS_STORED,
)
