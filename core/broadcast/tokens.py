"""The per-installation viewer token: created on first use, kept in the user config dir, rotatable (and audited)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import platformdirs

from core.audit import kinds, record_safely


def token_path() -> Path:
    """Where the token lives (readable by the user only)."""
    return Path(platformdirs.user_config_dir("pneumofl")) / "viewer-token"


def load_or_create_token(path: Path | None = None) -> str:
    """Return the installation's viewer token, creating it on first use."""
    path = path or token_path()
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    return _new_token(path)  # the first token: nothing was rotated


def rotate_token(path: Path | None = None, *, db_url: str | None = None) -> str:
    """Replace the token with a new random one (viewers holding the old one are refused from now on).

    Both ``pneumofl token rotate`` and the share dialog come here, so each rotation is one ``token_rotated``
    audit entry (never the token itself; a fingerprint of the new one, to match it later).

    Parameters
    ----------
    path
        The token file; this installation's (:func:`token_path`) by default.
    db_url
        The database whose audit trail gets the entry. Without it, this installation's own token (``path``
        None) is audited in the default database; a token file kept elsewhere is not this installation's.
    """
    token = _new_token(path)
    if db_url is not None or path is None:
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
        record_safely(
            db_url, kinds.TOKEN_ROTATED, {"token_file": str(path or token_path()), "fingerprint": fingerprint}
        )
    return token


def _new_token(path: Path | None) -> str:
    path = path or token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    tmp.replace(path)
    return token


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
