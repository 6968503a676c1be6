"""A federation's security material: a private CA, the server's TLS certificate and one key pair per site.

Layout of the output directory::

    ca.pem, ca.key           self-signed CA that SuperNodes trust (``--root-certificates``)
    server.pem, server.key   the SuperLink's / fleet front's TLS certificate, signed by the CA
    nodes/<name>.key         a site's private key (``flower-supernode --auth-supernode-private-key``)
    nodes/<name>.pub         its public key (``flwr supernode register``)

Node keys are ECDSA on P-384 in OpenSSH formats because Flower loads them with ``load_ssh_private_key`` (no
password) and ``load_ssh_public_key``, and accepts only NIST EC curves. Private files are written with mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The SuperLink also serves loopback (the fleet front and local tools reach it there), so these are always valid.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Issue certificates slightly in the past so a site whose clock runs a few minutes slow still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)


class CertificateError(ValueError):
    """Federation key material cannot be created or read; the message says which file and what to do."""


@dataclass(frozen=True)
class NodeKey:
    """A site's key pair on disk."""

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class FederationCerts:
    """Paths of everything :func:`init_federation_certs` wrote."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    nodes: dict[str, NodeKey]


def init_federation_certs(
    out_dir: Path,
    server_hosts: Sequence[str],
    node_names: Sequence[str],
    days: int = 825,
    *,
    force: bool = False,
) -> FederationCerts:
    """Create a CA, a server certificate and one key pair per node in ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Directory to write into; created if missing.
    server_hosts : Sequence[str]
        Addresses sites use to reach the server: IP addresses become IPAddress SANs, anything else a DNSName.
        ``127.0.0.1`` and ``localhost`` are always added.
    node_names : Sequence[str]
        One name per site (letters, digits, ``-`` and ``_``).
    days : int
        Validity of the CA and server certificates; 825 is the longest most TLS clients accept for a server.
    force : bool
        Overwrite existing material instead of refusing.

    Returns
    -------
    FederationCerts
        The paths written.

    Raises
    ------
    CertificateError
        If a file already exists and ``force`` is false, a host or node name is invalid, or ``days < 1``.
    """
    out_dir = Path(out_dir)
    hosts = _parse_hosts([server_hosts] if isinstance(server_hosts, str) else server_hosts)
    names = [node_names] if isinstance(node_names, str) else list(node_names)
    for name in names:
        _check_node_name(name)
    if len(set(names)) != len(names):
        raise CertificateError(f"Node names must be unique, got {names}.")
    if days < 1:
        raise CertificateError(f"Certificate validity must be at least one day, got {days}.")
    targets = [out_dir / n for n in ("ca.pem", "ca.key", "server.pem", "server.key")]
    for paths in (_node_paths(out_dir, name) for name in names):
        targets += [paths.private_key, paths.public_key]
    if not force:
        for path in targets:
            if path.exists():
                raise CertificateError(
                    f"{path} already exists; pass --force to replace this federation's keys "
                    "(every site then needs the new files) or choose another directory."
                )

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PneumoFL federation CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(hosts[0].value))])
    server_cert = (
        _builder(server_name, ca_name, server_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    result = FederationCerts(
        ca_cert=out_dir / "ca.pem",
        ca_key=out_dir / "ca.key",
        server_cert=out_dir / "server.pem",
        server_key=out_dir / "server.key",
        nodes={name: _write_node_key(out_dir, name) for name in names},
    )
    _write(result.ca_key, _pem_private(ca_key), private=True)
    _write(result.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(result.server_key, _pem_private(server_key), private=True)
    _write(result.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), private=False)
    return result


def add_node_key(out_dir: Path, name: str, *, force: bool = False) -> NodeKey:
    """Add one site's key pair to an existing federation directory.

    Parameters
    ----------
    out_dir : Path
        A directory made by :func:`init_federation_certs`.
    name : str
        The site's name (letters, digits, ``-`` and ``_``).
    force : bool
        Replace an existing key pair of that name.

    Returns
    -------
    NodeKey
        The paths written.

    Raises
    ------
    CertificateError
        If the name is invalid, ``out_dir`` holds no ``ca.pem``, or the key exists and ``force`` is false.
    """
    out_dir = Path(out_dir)
    _check_node_name(name)
    if not (out_dir / "ca.pem").is_file():
        raise CertificateError(
            f"{out_dir} holds no ca.pem; create the federation there first, or pass the directory that has it."
        )
    paths = _node_paths(out_dir, name)
    if not force and (paths.private_key.exists() or paths.public_key.exists()):
        raise CertificateError(
            f"{paths.private_key} already exists; choose another site name, or pass --force to replace its key "
            "(the site must then be registered again)."
        )
    return _write_node_key(out_dir, name)


def public_key_fingerprint(pub_path: Path) -> str:
    """Return a short, comment-independent fingerprint of an OpenSSH public key, for users to compare.

    Parameters
    ----------
    pub_path : Path
        An OpenSSH public key file such as ``nodes/<name>.pub``.

    Returns
    -------
    str
        The first 16 hex digits of the SHA-256 of the key blob (the same bytes ``ssh-keygen -l`` hashes),
        in groups of four, e.g. ``"3f2a:9c0d:1e4b:5a67"``.

    Raises
    ------
    CertificateError
        If the file is missing or not an OpenSSH public key.
    """
    try:
        key = serialization.load_ssh_public_key(Path(pub_path).read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{pub_path} is not a readable OpenSSH public key: {exc}") from exc
    return _fingerprint(key)


def private_key_fingerprint(key_path: Path) -> str:
    """The :func:`public_key_fingerprint` of a site's private node key (what the server enrolled, or not).

    Raises
    ------
    CertificateError
        If the file is missing or not an OpenSSH private key.
    """
    try:
        key = serialization.load_ssh_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{key_path} is not a readable OpenSSH private key: {exc}") from exc
    return _fingerprint(key.public_key())


def _fingerprint(key: Any) -> str:
    # Re-serialise so that the comment and any whitespace differences do not change the fingerprint.
    blob = base64.b64decode(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    )
    digest = hashlib.sha256(blob).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def _parse_hosts(server_hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Turn host strings into SubjectAlternativeName entries, loopback included, without duplicates."""
    entries: list[x509.GeneralName] = []
    for raw in [*server_hosts, *LOOPBACK_HOSTS]:
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):  # a bracketed IPv6 address, as in URLs
            host = host[1:-1]
        entry: x509.GeneralName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            if not host or "/" in host or ":" in host or any(c.isspace() for c in host):
                raise CertificateError(
                    f"{raw!r} is not a host name or IP address; give the bare address sites connect to, "
                    "without scheme or port (e.g. 'fl.example.org' or '10.0.0.5')."
                ) from None
            entry = x509.DNSName(host.lower())
        if entry not in entries:
            entries.append(entry)
    return entries


def _check_node_name(name: str) -> None:
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise CertificateError(
            f"Invalid site name {name!r}: use 1 to 64 letters, digits, '-' or '_' (it becomes a file name)."
        )


def _node_paths(out_dir: Path, name: str) -> NodeKey:
    nodes = out_dir / "nodes"
    return NodeKey(name=name, private_key=nodes / f"{name}.key", public_key=nodes / f"{name}.pub")


def _write_node_key(out_dir: Path, name: str) -> NodeKey:
    paths = _node_paths(out_dir, name)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(paths.private_key, private, private=True)
    _write(paths.public_key, public + f" pneumofl-{name}\n".encode(), private=False)
    return paths


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: uvicorn and Flower load TLS keys without a password prompt.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically; a private file is 0600 from its creation, so it is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    mode = 0o600 if private else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.chmod(tmp, mode)  # the umask may have narrowed the bits, or a stale temp file kept other ones
        handle.write(data)
    os.replace(tmp, path)
