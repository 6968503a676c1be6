"""Which Flower app a site runs: PneumoFL's own, signed by the site's steward, checked by Flower's SuperNode.

A SuperNode runs whatever app the SuperLink hands it unless it is started with ``--trusted-entities``: then
Flower itself (outside any app) verifies the app bundle's signature before storing it or starting a ClientApp
(research/flower-app-verification.md). This module holds the pieces of that check that are ours:

- the app bundle (FAB) of the PneumoFL version installed here, built the same way at the server and at every
  site, so its SHA-256 names "the federation modules of PneumoFL X.Y.Z";
- the steward key: an OpenSSH ed25519 key of the site's data steward, kept in the site's config folder;
- an :class:`Approval`: the steward's signature over one FAB's hash, in the form Flower's check reads. The site
  sends it to the server at join; the server attaches it to the app it submits (see
  :mod:`core.federated.app_hub`), and only the site's own key can verify it;
- the trusted-entities file of the SuperNode, never empty (Flower silently turns checking off for ``{}``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from core import __version__
from core.errors import PneumoFLError
from core.federated.control import BUNDLE_DIR

PUBLISHER = "pneumofl"
APP_NAME = "pneumofl-federation"
APP_ID = f"@{PUBLISHER}/{APP_NAME}"  # the app id Flower's SuperLink asks the server's app hub for
KEY_FILE = "steward_ed25519"
APPROVAL_PATH = "/pneumofl/v1/approval"  # where a site sends its approval: answered by the server's fleet front
NODE_KEY_HEADER, NODE_SIGNATURE_HEADER = "x-pneumofl-node-key", "x-pneumofl-node-signature"


class AppTrustError(PneumoFLError):
    """A steward key, an approval or a trust file is missing, unreadable or does not match."""


def app_version(version: str = __version__) -> str:
    """PneumoFL's version as Flower's app versions want it (``x.y.z``, digits only)."""
    parts = version.split("+")[0].split(".")[:3]
    digits = ["".join(ch for ch in part if ch.isdigit()) or "0" for part in parts]
    return ".".join([*digits, "0", "0", "0"][:3])


@functools.cache
def pneumofl_fab(version: str = __version__) -> bytes:
    """The app bundle of this PneumoFL version, byte for byte the same wherever it is built.

    It is only the bundle's ``pyproject.toml`` (naming the installed ``core.federated`` modules) with the
    version stamped in, built by Flower's own builder (fixed dates, sorted files).
    """
    from flwr.cli.build import build_fab_from_files

    text = (BUNDLE_DIR / "pyproject.toml").read_text(encoding="utf-8")
    stamped = text.replace('version = "1.0.0"', f'version = "{app_version(version)}"', 1)
    return build_fab_from_files({"pyproject.toml": stamped.encode("utf-8")})[0]


def fab_from_dir(folder: Path) -> bytes:
    """The bundle Flower builds from an app folder (a steward approving another app, the benchmark's bare app)."""
    from flwr.cli.build import build_fab_from_disk

    try:
        return build_fab_from_disk(Path(folder))
    except (OSError, ValueError) as exc:
        raise AppTrustError(f"Cannot build the Flower app in {folder}: {exc}") from exc


def fab_sha256(fab: bytes) -> str:
    """The hash Flower's check signs and verifies (hex)."""
    return hashlib.sha256(fab).hexdigest()


@dataclass(frozen=True)
class Approval:
    """A steward's signature over one app bundle, as it travels from a site to the server.

    ``key_id`` is derived from the public key, so nobody can file a signature under another steward's id.
    """

    site_name: str
    key_id: str
    public_key: str  # OpenSSH text
    fab_sha256: str
    signature: str  # base64url, as Flower reads it
    signed_at: int
    pneumofl_version: str

    def to_json(self) -> str:
        """The approval as JSON text."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Approval:
        """Parse and check an approval; raises :class:`AppTrustError` for anything malformed or forged."""
        try:
            values = json.loads(text)
            approval = cls(**{name: values[name] for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError) as exc:
            raise AppTrustError(f"The approval is malformed ({exc}).") from exc
        approval.check()
        return approval

    def check(self) -> None:
        """Raise unless the key id belongs to the key and the signature verifies over ``fab_sha256``."""
        try:
            key = serialization.load_ssh_public_key(self.public_key.encode("utf-8"))
        except (ValueError, TypeError) as exc:
            raise AppTrustError(f"The approval of site '{self.site_name}' carries an unreadable key.") from exc
        if not isinstance(key, ed25519.Ed25519PublicKey) or key_id(key) != self.key_id:
            raise AppTrustError(f"The approval of site '{self.site_name}' names a key id that is not its key's.")
        try:
            key.verify(_b64url_decode(self.signature), _message(self.fab_sha256, self.signed_at))
        except (InvalidSignature, ValueError) as exc:
            raise AppTrustError(f"The approval of site '{self.site_name}' has a signature that does not verify.") from exc

    def verification(self) -> tuple[str, str]:
        """``(key id, JSON)``: one entry of a FAB's verifications, as Flower's SuperNode reads it."""
        return self.key_id, json.dumps({"signature": self.signature, "signed_at": self.signed_at})


def sign_with_node_key(body: bytes, node_key: Path) -> tuple[str, str]:
    """``(public key, signature)`` headers of an approval signed with the site's enrolled node key (ECDSA).

    The server then counts the approval for the site it enrolled with that key, under the enrolled name.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_private_key(Path(node_key).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise AppTrustError(f"Cannot read this site's node key {node_key}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AppTrustError(f"The node key {node_key} is not an ECDSA key (make one with `pneumofl certs init`).")
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode("ascii"), base64.b64encode(signature).decode("ascii")


def node_key_signed(body: bytes, public_key: str, signature: str) -> bool:
    """Whether ``signature`` is ``public_key``'s ECDSA signature over ``body``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(public_key.encode("ascii"))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(base64.b64decode(signature), body, ec.ECDSA(hashes.SHA256()))
    except (ValueError, TypeError, InvalidSignature, UnicodeError):
        return False
    return True


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """A key's id in trust files and verifications: derived from the key itself."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"pneumofl-steward-{hashlib.sha256(raw).hexdigest()[:16]}"


def default_steward_dir() -> Path:
    """Where a site keeps its steward key unless told otherwise (``PNEUMOFL_STEWARD_DIR`` overrides)."""
    override = os.environ.get("PNEUMOFL_STEWARD_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("pneumofl")) / "steward"


class StewardKey:
    """The site data steward's signing key (OpenSSH ed25519, readable only by the site's user).

    Parameters
    ----------
    folder
        Holds ``steward_ed25519`` and ``steward_ed25519.pub``; created with mode 0700 on first use.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else default_steward_dir()
        self.path = self.folder / KEY_FILE
        self._key: ed25519.Ed25519PrivateKey | None = None

    def load_or_create(self) -> StewardKey:
        """Load the key, making one the first time."""
        if not self.path.exists():
            self.rotate()
        try:
            key = serialization.load_ssh_private_key(self.path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise AppTrustError(f"Cannot read the steward key {self.path}: {exc}") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise AppTrustError(f"The steward key {self.path} is not an ed25519 key.")
        self._key = key
        return self

    def rotate(self) -> str:
        """Replace the key with a new one; approvals signed by the old key stop verifying. Returns the new id."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private)
        os.replace(temporary, self.path)
        self.path.with_suffix(".pub").write_text(_openssh(key.public_key()) + "\n", encoding="utf-8")
        self._key = key
        return key_id(key.public_key())

    @property
    def key(self) -> ed25519.Ed25519PrivateKey:
        """The loaded private key."""
        if self._key is None:
            self.load_or_create()
        assert self._key is not None
        return self._key

    @property
    def key_id(self) -> str:
        """The key's id."""
        return key_id(self.key.public_key())

    def approve(self, fab: bytes, site_name: str, version: str = __version__) -> Approval:
        """Sign ``fab``: this site will run it."""
        digest, signed_at = fab_sha256(fab), int(time.time())
        signature = self.key.sign(_message(digest, signed_at))
        return Approval(
            site_name=site_name,
            key_id=self.key_id,
            public_key=_openssh(self.key.public_key()),
            fab_sha256=digest,
            signature=base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii"),
            signed_at=signed_at,
            pneumofl_version=version,
        )

    def write_trusted_entities(self, path: Path) -> Path:
        """The SuperNode's ``--trusted-entities`` file: this steward's key, and only it (never empty)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        entities = {self.key_id: _openssh(self.key.public_key())}
        path.write_text(json.dumps(entities) + "\n", encoding="utf-8")  # JSON is YAML, which Flower reads
        return path


def check_trusted_entities(path: Path) -> int:
    """How many keys the SuperNode's trust file holds; raise if none (Flower would silently not check)."""
    try:
        entities = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AppTrustError(f"Cannot read the trusted-entities file {path}: {exc}") from exc
    if not isinstance(entities, dict) or not entities:
        raise AppTrustError(
            f"The trusted-entities file {path} is empty: Flower would then run any app the server sends. "
            "Refusing to start the site."
        )
    return len(entities)


def _message(digest_hex: str, signed_at: int) -> bytes:
    """What Flower's check verifies, built by Flower's own function."""
    from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign

    return create_message_to_sign(bytes.fromhex(digest_hex), signed_at)


def _openssh(public_key: ed25519.Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
