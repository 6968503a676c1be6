"""The per-installation viewer token: created on first use, kept in the user config dir, rotatable."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

import platformdirs


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
    return rotate_token(path)


def rotate_token(path: Path | None = None) -> str:
    """Replace the token with a new random one (viewers holding the old one are refused from now on)."""
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
