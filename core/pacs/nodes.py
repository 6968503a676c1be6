"""The PACS nodes a workstation knows, kept in the user's settings (``pacs.json``, readable by the user only).

A node is an address and two AE titles: the PACS's (the *called* title) and ours (the *calling* title, which the
PACS must know before it answers). Optional TLS names a CA file, and a client certificate and key when the PACS
asks for one. A node retrieves with C-GET (the images come back on our own association) or C-MOVE (the PACS
opens an association to our storage SCP on ``move_port``: it must know our AE title, address and that port).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from core.errors import PneumoFLError

DEFAULT_OUR_AE = "PNEUMOFL"
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root; a site sets its own
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable characters, no backslash (PS3.5 AE VR)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_UID_ROOT = re.compile(r"^[0-9]+(\.[0-9]+)*\.?$")
RETRIEVE_METHODS = ("get", "move")
DEFAULT_MOVE_PORT = 11112  # DICOM's registered port: what a PACS administrator expects a workstation to listen on


@dataclass(frozen=True)
class PacsNode:
    """One PACS: where it listens and which AE titles the association uses."""

    name: str
    ae_title: str
    host: str
    port: int
    our_ae: str = DEFAULT_OUR_AE
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    retrieve: str = "get"  # C-GET or C-MOVE (see RETRIEVE_METHODS)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise PneumoFLError(
                f"PACS name {self.name!r}: use up to 40 letters, digits, '.', '_' or '-', starting with a letter or digit."
            )
        for label, title in (("--ae", self.ae_title), ("--our-ae", self.our_ae)):
            if not _AE.match(title) or not title.strip():
                raise PneumoFLError(f"{label} {title!r}: an AE title is 1 to 16 printable characters, no backslash.")
        if not self.host.strip():
            raise PneumoFLError(f"PACS {self.name}: --host is empty; give the PACS's host name or address.")
        if not 0 < self.port < 65536:
            raise PneumoFLError(f"PACS {self.name}: --port {self.port} is not a port (1 to 65535).")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise PneumoFLError(f"PACS {self.name}: give --tls-cert and --tls-key together, or neither.")
        if self.tls_cert and not self.tls_ca:
            raise PneumoFLError(f"PACS {self.name}: a client certificate needs --tls-ca, the PACS's CA certificate.")
        if self.retrieve not in RETRIEVE_METHODS:
            raise PneumoFLError(f"PACS {self.name}: --retrieve {self.retrieve!r}: use get (C-GET) or move (C-MOVE).")

    @property
    def address(self) -> str:
        """``AE@host:port``, as sentences name the node."""
        return f"{self.ae_title}@{self.host}:{self.port}"


def new_node(
    name: str,
    ae_title: str,
    host: str,
    port: int,
    our_ae: str = DEFAULT_OUR_AE,
    *,
    tls_ca: str = "",
    tls_cert: str = "",
    tls_key: str = "",
    retrieve: str = "get",
) -> PacsNode:
    """A node as a user typed it (``pacs add``, Preferences): TLS files must exist, and are kept as full paths.

    Raises
    ------
    PneumoFLError
        Naming the field that is wrong and what it should be.
    """
    tls = {}
    for flag, key, value in (
        ("--tls-ca", "tls_ca", tls_ca),
        ("--tls-cert", "tls_cert", tls_cert),
        ("--tls-key", "tls_key", tls_key),
    ):
        value = value.strip()
        if value and not Path(value).expanduser().is_file():
            raise PneumoFLError(f"{flag} {value} does not exist; give the file's path.")
        tls[key] = str(Path(value).expanduser().resolve()) if value else ""
    return PacsNode(name.strip(), ae_title.strip(), host.strip(), port, our_ae.strip(), retrieve=retrieve, **tls)


@dataclass
class PacsSettings:
    """What a workstation knows of its PACS.

    Every node, the UID root of the results we make, whether retrieved images are kept, and the port our storage
    SCP listens on during a C-MOVE.
    """

    nodes: dict[str, PacsNode] = field(default_factory=dict)
    uid_root: str = DEFAULT_UID_ROOT
    keep_retrieved: bool = False
    move_port: int = DEFAULT_MOVE_PORT

    def node(self, name: str) -> PacsNode:
        """The node called ``name``.

        Raises
        ------
        PneumoFLError
            Naming the known nodes and how to add one.
        """
        if name not in self.nodes:
            known = ", ".join(sorted(self.nodes)) or "none yet"
            raise PneumoFLError(f"No PACS called {name!r} (known: {known}). Add it: pneumofl pacs add {name} --ae ...")
        return self.nodes[name]


def settings_file() -> Path:
    """``pacs.json`` in the user's PneumoFL configuration folder."""
    return Path(platformdirs.user_config_dir("pneumofl")) / "pacs.json"


def check_uid_root(root: str) -> str:
    """``root`` ending with a dot, after checking it is a UID prefix short enough to leave room for a suffix.

    Raises
    ------
    PneumoFLError
        For anything but digits and dots, or a root longer than 40 characters.
    """
    if not _UID_ROOT.match(root) or len(root) > 40:
        raise PneumoFLError(
            f"UID root {root!r}: digits separated by dots, at most 40 characters (e.g. 1.2.826.0.1.3680043.8.498)."
        )
    return root if root.endswith(".") else root + "."


def check_move_port(port: int) -> int:
    """``port`` after checking it is one our storage SCP may listen on (not a privileged one).

    Raises
    ------
    PneumoFLError
        For a port outside 1024..65535.
    """
    if not 1024 <= port < 65536:
        raise PneumoFLError(f"C-MOVE port {port}: use 1024 to 65535 (e.g. 11112), the port the PACS sends images to.")
    return port


def load_settings(path: Path | None = None) -> PacsSettings:
    """The saved settings, or empty ones when there are none yet.

    Raises
    ------
    PneumoFLError
        Naming the file, when it is not valid settings.
    """
    path = path or settings_file()
    if not path.exists():
        return PacsSettings()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        nodes = {name: PacsNode(name=name, **fields) for name, fields in raw.get("nodes", {}).items()}
        return PacsSettings(
            nodes,
            check_uid_root(raw.get("uid_root", DEFAULT_UID_ROOT)),
            bool(raw.get("keep_retrieved")),
            check_move_port(int(raw.get("move_port", DEFAULT_MOVE_PORT))),
        )
    except (OSError, ValueError, TypeError, AttributeError, PneumoFLError) as exc:
        raise PneumoFLError(
            f"{path} is not valid PACS settings ({exc}): fix it or remove it and add the nodes again."
        ) from None


def save_settings(settings: PacsSettings, path: Path | None = None) -> Path:
    """Write the settings, readable by the user only (they name the hospital's PACS)."""
    path = path or settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    nodes = {
        name: {k: v for k, v in dataclasses.asdict(n).items() if k != "name"} for name, n in settings.nodes.items()
    }
    body = {
        "nodes": nodes,
        "uid_root": settings.uid_root,
        "keep_retrieved": settings.keep_retrieved,
        "move_port": settings.move_port,
    }
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump(body, stream, indent=2)
    os.replace(temporary, path)
    return path
