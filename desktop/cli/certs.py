"""Create a federation's security material: a CA, the server's TLS certificate and one key pair per site.

Examples
--------
  pneumofl certs init --out fed-certs --server-host fl.hospital.example --sites north south east
  pneumofl certs add-site west --out fed-certs

Give each site ca.pem and its own nodes/<site>.key (never the CA key). The server enrols nodes/<site>.pub.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.cli.common import CommandError


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``certs init`` and ``certs add-site``."""
    certs = commands.add_parser("certs", help="create TLS certificates and site keys for a federation")
    actions = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="create the CA, the server certificate and site keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--out", metavar="DIR", required=True, help="folder to write (kept private: it holds the CA key)")
    init.add_argument(
        "--server-host", metavar="HOST", action="append", default=[], help="server name or IP sites use (repeat)"
    )
    init.add_argument("--sites", metavar="NAME", nargs="*", default=[], help="site names to create keys for")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(func=run_init)
    add = actions.add_parser("add-site", help="create one more site key pair")
    add.add_argument("name")
    add.add_argument("--out", metavar="DIR", required=True, help="the folder `certs init` wrote")
    add.set_defaults(func=run_add)


def run_init(args: argparse.Namespace) -> int:
    """Write the material and say what goes where."""
    from core.federated.certs import CertificateError, init_federation_certs, public_key_fingerprint

    if not args.server_host:
        raise CommandError("Give the name or IP address sites will use to reach the server: --server-host HOST.")
    try:
        made = init_federation_certs(Path(args.out).expanduser(), args.server_host, args.sites, force=args.force)
    except CertificateError as exc:
        raise CommandError(str(exc)) from None
    print(f"CA: {made.ca_cert} (its key {made.ca_key} stays with the server admin)")
    print(f"Server certificate for {', '.join(args.server_host)}: {made.server_cert}")
    for name, key in made.nodes.items():
        print(
            f"Site {name}: give it {made.ca_cert.name} and {key.private_key}; enrol {key.public_key} "
            f"(fingerprint {public_key_fingerprint(key.public_key)})"
        )
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Add one site's key pair."""
    from core.federated.certs import CertificateError, add_node_key, public_key_fingerprint

    try:
        key = add_node_key(Path(args.out).expanduser(), args.name)
    except CertificateError as exc:
        raise CommandError(str(exc)) from None
    print(
        f"Site {args.name}: give it ca.pem and {key.private_key}; enrol {key.public_key} "
        f"(fingerprint {public_key_fingerprint(key.public_key)})"
    )
    return 0
