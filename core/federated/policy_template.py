"""The commented site policy file that ``pneumofl site policy init`` writes, and the same policy as plain TOML.

Every key is written with its default and a comment saying what it protects against, so the data steward sees
every choice the file makes; loading the template gives :func:`core.federated.policy.default_policy` plus the
listed servers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from core.federated.policy import (
    PolicyError,
    SitePolicy,
    default_policy,
    format_fingerprint,
    normalize_fingerprint,
)

# What each key protects against, in the file's order (policy_version first, as the loader expects).
_COMMENTS: dict[str, str] = {
    "policy_version": "The format of this file. PneumoFL refuses a newer version rather than guess what it means.",
    "allowed_servers": (
        "SHA-256 fingerprints of the CA certificates of the servers this site trains for (colons and case are\n"
        "ignored; compare with `openssl x509 -noout -fingerprint -sha256 -in ca.pem`). Protects against training\n"
        "for, and sending updates derived from this site's images to, a server nobody here agreed to."
    ),
    "allow_insecure_loopback": (
        "Allow a server on this very machine without TLS (a one-machine trial) without listing it above. A server\n"
        "on another machine always needs its CA fingerprint listed: without TLS anyone on the network could pose\n"
        "as it."
    ),
    "allowed_models": (
        "Backbones a plan may train. Protects against a model picked to memorise images (a large model remembers\n"
        "more of what it saw) and against updates too large for this site's link."
    ),
    "allowed_strategies": (
        "Aggregation strategies a plan may use. fedmedian and krum pass on values taken from single sites'\n"
        "updates instead of an average, so every other site sees more of each one; remove them to refuse that."
    ),
    "max_rounds": (
        "Rounds one federation may train here, counted over all its runs (resumed or resubmitted ones too). Each\n"
        "round sends a new update derived from this site's images; this caps how many a federation collects."
    ),
    "max_local_epochs": (
        "Local epochs a plan may ask for per round. Protects this site's machine time, and against updates that\n"
        "fit this site's images so closely that they reveal more about them."
    ),
    "require_dp": (
        "Decline every plan without differential privacy (noise on the sites' combined update). Without it the\n"
        "server sees this site's update exactly as trained, which can reveal details of the images behind it."
    ),
    "min_dp_noise": (
        "The lowest differential-privacy noise multiplier a plan may use (0 = any). Protects against a plan whose\n"
        "noise is too weak to hide any one site's contribution. A value above 0 also declines plans without DP."
    ),
    "max_epsilon": (
        "The privacy budget (epsilon, at the plan's delta) one server may spend here over ALL its runs: privacy\n"
        "loss adds up, so a server cannot reset it by starting a new federation. Counted for plans with DP only."
    ),
    "send_site_metrics": (
        "Whether the cross-site evaluation numbers (global_val_*: how the received model does on this site's\n"
        "validation images) may leave the site. They describe this site's data, not only the model."
    ),
    "send_data_fingerprint": (
        "Whether the counts of this site's training images by modality, view, body part, manufacturer and age\n"
        "band (with size bounds and a histogram of mean intensities; no file, no patient) may leave the site. The\n"
        "federation's model uses them to warn when an image it reads is unlike what it was trained on."
    ),
    "local_dp_noise": (
        "Noise this site adds itself to every update it sends (standard deviation = local_dp_noise *\n"
        "local_clip_norm), for when the server's own noise is not trusted. 0 = off; needs local_clip_norm > 0."
    ),
    "local_clip_norm": (
        "Clip every update this site sends to this L2 norm before any local noise (0 = off). Bounds how much any\n"
        "one round can reveal about this site's images."
    ),
}


def policy_template(allowed_fingerprints: Iterable[str] = ()) -> str:
    """The commented policy file: every key at its default, with ``allowed_fingerprints`` listed.

    Parameters
    ----------
    allowed_fingerprints
        CA certificate fingerprints of servers to allow (any case, colons allowed).

    Raises
    ------
    PolicyError
        If a fingerprint is not 64 hex digits.
    """
    try:
        servers = tuple(dict.fromkeys(normalize_fingerprint(fp) for fp in allowed_fingerprints))
    except ValueError as exc:
        raise PolicyError(f"Cannot list that server: {exc}.") from None
    policy = replace(default_policy(), allowed_servers=servers)
    parts = [
        "# PneumoFL site policy: what federation plans this site may train.",
        "# The site checks every plan a server sends against this file before any training, and declines one",
        "# that asks for more. Check an edited file with `pneumofl site policy check FILE`.",
        "",
    ]
    for name in _COMMENTS:
        parts += [f"# {line}" for line in _COMMENTS[name].splitlines()]
        parts += [f"{name} = {_toml_value(name, getattr(policy, name))}", ""]
    return "\n".join(parts)


def policy_toml(policy: SitePolicy) -> str:
    """``policy`` as plain ``key = value`` TOML lines (what ``pneumofl site policy show`` prints)."""
    return "".join(f"{f.name} = {_toml_value(f.name, getattr(policy, f.name))}\n" for f in _ordered_fields())


def write_policy_template(path: str | Path, allowed_fingerprints: Iterable[str] = (), *, force: bool = False) -> Path:
    """Write :func:`policy_template` to ``path``, readable by all but writable by its owner only.

    Raises
    ------
    PolicyError
        If ``path`` exists and ``force`` is false, or it cannot be written.
    """
    path = Path(path).expanduser()
    if path.exists() and not force:
        raise PolicyError(f"Site policy {path} already exists; give --force to replace it, or choose another file.")
    text = policy_template(allowed_fingerprints)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        # A policy others could edit would let them widen what the site accepts.
        os.chmod(path, 0o644)
    except OSError as exc:
        raise PolicyError(f"Cannot write the site policy {path} ({exc}).") from None
    return path


def _ordered_fields() -> list[Any]:
    order = list(_COMMENTS)
    return sorted(fields(SitePolicy), key=lambda f: order.index(f.name) if f.name in order else len(order))


def _toml_value(name: str, value: Any) -> str:
    """TOML for one value; fingerprints as colon-separated pairs, one per line, as people compare them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if name == "allowed_servers":
            if not value:
                return "[]"
            return "[\n" + "".join(f'    "{format_fingerprint(fp)}",\n' for fp in value) + "]"
        return "[" + ", ".join(json.dumps(item) for item in value) + "]"
    return repr(value)  # ints, and floats as 0.0 / 10.0 / 1e-05, all valid TOML
