"""A site data steward's policy: which federation plans this site may train, read from a versioned TOML file.

A site joins federations run by a server it does not fully trust, so the site's own code checks every plan the
server sends against this policy before any training (:func:`core.federated.policy_check.check_plan`). The file
is written by ``pneumofl site policy init`` (:mod:`core.federated.policy_template`) and every key has a safe
default, so a missing key never widens what the site accepts.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core.config import BACKBONES
from core.errors import ConfigError
from core.federated.settings import STRATEGIES

POLICY_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")


class PolicyError(ConfigError):
    """The site policy file is missing, unreadable or has a bad field; the message names the file and field."""


@dataclass(frozen=True)
class SitePolicy:
    """What this site's data steward allows a federation plan to ask of it.

    Parameters
    ----------
    allowed_servers
        SHA-256 fingerprints (64 lower-case hex digits) of the CA certificates of servers this site trains for.
    allow_insecure_loopback
        Whether a server on this machine without TLS (a one-machine trial) is allowed with no fingerprint listed.
    allowed_models, allowed_strategies
        Backbones (:data:`core.config.BACKBONES`) and aggregation strategies
        (:data:`core.federated.settings.STRATEGIES`) a plan may use.
    max_rounds
        Rounds one federation may train at this site, over all its runs (resumed and resubmitted ones too).
    max_local_epochs
        Local epochs a plan may ask for per round.
    require_dp, min_dp_noise, max_epsilon
        Whether a plan must use differential privacy, its lowest noise multiplier, and the privacy budget
        (epsilon) one server may spend at this site over all its runs.
    send_site_metrics
        Whether cross-site evaluation numbers (``global_val_*``) may leave the site.
    send_data_fingerprint
        Whether the coarse counts of the site's training images (``core.data.fingerprint``: by modality, view,
        body part, manufacturer and age band, size bounds, a mean-intensity histogram) may leave the site, so
        the federation's model can warn when an image is unlike what it was trained on.
    local_dp_noise, local_clip_norm
        Privacy the site adds itself (Flower's LocalDpMod): the update is clipped to ``local_clip_norm`` and gets
        Gaussian noise of standard deviation ``local_dp_noise * local_clip_norm``; 0 turns either off.
    policy_version
        The file format's version.
    """

    allowed_servers: tuple[str, ...] = ()
    allow_insecure_loopback: bool = True
    allowed_models: tuple[str, ...] = BACKBONES
    allowed_strategies: tuple[str, ...] = STRATEGIES
    max_rounds: int = 50
    max_local_epochs: int = 20
    require_dp: bool = False
    min_dp_noise: float = 0.0
    max_epsilon: float = 10.0
    send_site_metrics: bool = True
    send_data_fingerprint: bool = True
    local_dp_noise: float = 0.0
    local_clip_norm: float = 0.0
    policy_version: int = POLICY_VERSION

    @property
    def local_dp(self) -> bool:
        """Whether the site adds noise of its own to what it sends."""
        return self.local_dp_noise > 0


def default_policy() -> SitePolicy:
    """The policy of a site that has no policy file: every safe default."""
    return SitePolicy()


def load_policy(path: str | Path) -> SitePolicy:
    """Read and validate a site policy file.

    Parameters
    ----------
    path
        The TOML file ``pneumofl site policy init`` wrote (and the data steward edited).

    Raises
    ------
    PolicyError
        If the file is missing or not TOML, is of a newer version, has an unknown key or a bad value; the
        message names the file and the field and says what to do.
    """
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(
            f"Site policy {path} does not exist; write one with `pneumofl site policy init -o {path}`."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"Site policy {path} cannot be read ({exc}); check the file and its permissions.") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"Site policy {path} is not valid TOML ({exc}); fix the line named there.") from None
    return policy_from_dict(data, source=str(path))


def policy_from_dict(data: dict[str, Any], *, source: str = "the site policy") -> SitePolicy:
    """Validate the keys of a parsed policy file (see :func:`load_policy`); ``source`` names it in messages."""
    version = data.get("policy_version")
    if version is None:
        raise PolicyError(f"Site policy {source} lacks policy_version; put `policy_version = 1` at its top.")
    if not _is_int(version) or version < 1:
        raise PolicyError(f"Site policy {source}: policy_version must be a whole number such as 1, not {version!r}.")
    if version > POLICY_VERSION:
        raise PolicyError(
            f"Site policy {source} is version {version}, newer than this PneumoFL understands "
            f"(version {POLICY_VERSION}); update PneumoFL or write the policy again with `pneumofl site policy init`."
        )
    known = {f.name for f in fields(SitePolicy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(
            f"Site policy {source} has unknown key(s) {', '.join(unknown)}; remove them or correct their spelling "
            f"(known keys: {', '.join(sorted(known))})."
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _field(name, value, source)
    policy = SitePolicy(**values)
    if policy.local_dp_noise > 0 and policy.local_clip_norm <= 0:
        raise PolicyError(
            f"Site policy {source}: local_dp_noise is {policy.local_dp_noise} but local_clip_norm is 0; "
            "local noise is scaled by the clipping norm, so set local_clip_norm to a positive number."
        )
    return policy


def policy_digest(policy: SitePolicy) -> str:
    """SHA-256 (hex) of a canonical JSON form of ``policy``: which policy a decision was made under, for audits."""
    canonical = json.dumps(asdict(policy), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lower-case hex digits; colons, spaces and case are ignored.

    Raises
    ------
    ValueError
        If ``text`` is not 64 hex digits once colons and spaces are removed.
    """
    compact = re.sub(r"[\s:]", "", text).lower()
    if not _HEX64.fullmatch(compact):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return compact


def format_fingerprint(fingerprint: str) -> str:
    """``AB:CD:…``, as ``openssl x509 -noout -fingerprint -sha256`` prints it, for people to compare."""
    compact = normalize_fingerprint(fingerprint).upper()
    return ":".join(compact[i : i + 2] for i in range(0, len(compact), 2))


def ca_fingerprint(pem_path: str | Path) -> str:
    """SHA-256 fingerprint (64 lower-case hex digits) of the one CA certificate in a PEM file.

    Raises
    ------
    PolicyError
        If the file is missing or does not hold exactly one PEM certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    path = Path(pem_path).expanduser()
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise PolicyError(f"CA certificate {path} does not exist; give the server's ca.pem.") from None
    except (OSError, ValueError) as exc:
        raise PolicyError(f"CA certificate {path} is not a readable PEM certificate ({exc}).") from None
    if len(certificates) != 1:
        raise PolicyError(
            f"CA certificate {path} holds {len(certificates)} certificates; give the federation's CA certificate alone."
        )
    return certificates[0].fingerprint(hashes.SHA256()).hex()


def _field(name: str, value: Any, source: str) -> Any:
    """Check one key's value; return it in the dataclass's type."""
    where = f"Site policy {source}: {name}"
    default = getattr(SitePolicy(), name)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise PolicyError(f"{where} must be true or false, not {value!r}.")
        return value
    if isinstance(default, tuple):
        return _string_list(name, value, where)
    if isinstance(default, int):
        if not _is_int(value) or value < 1:
            raise PolicyError(f"{where} must be a whole number of at least 1, not {value!r}.")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise PolicyError(f"{where} must be a number of 0 or more, not {value!r}.")
    if name == "max_epsilon" and value <= 0:
        raise PolicyError(f"{where} must be a positive privacy budget, not {value!r}.")
    return float(value)


def _string_list(name: str, value: Any, where: str) -> tuple[str, ...]:
    """A list of fingerprints, backbones or strategies, checked against what exists; duplicates dropped."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f'{where} must be a list of quoted strings such as ["a", "b"], not {value!r}.')
    if name == "allowed_servers":
        try:
            return tuple(dict.fromkeys(normalize_fingerprint(item) for item in value))
        except ValueError as exc:
            raise PolicyError(
                f"{where}: {exc}; list each server's CA fingerprint, e.g. with "
                "`pneumofl site policy init --allow-server ca.pem`."
            ) from None
    choices = BACKBONES if name == "allowed_models" else STRATEGIES
    unknown = [item for item in value if item not in choices]
    if unknown:
        raise PolicyError(f"{where} names {', '.join(map(repr, unknown))}; choose from {', '.join(choices)}.")
    return tuple(dict.fromkeys(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
