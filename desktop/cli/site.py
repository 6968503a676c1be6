"""Take part in federations as a site: join one; the data steward's policy and key say which plans and app run.

Examples
--------
  pneumofl site join --server fl.hospital.example:9092 --data ~/xrays --ca ca.pem --key north.key --name north
  pneumofl site policy init -o site-policy.toml --allow-server fed-certs/ca.pem
  pneumofl site policy show site-policy.toml
  pneumofl site policy check site-policy.toml
  pneumofl site key show
  pneumofl site key rotate

Every key of the policy file has a safe default and a comment saying what it protects against. The steward key
signs the PneumoFL federation app of the installed version; the site's SuperNode runs only apps it signed.
Rotating it makes every earlier signature worthless (a lost or leaked key is revoked this way); the next
`site join` sends the server the new signature.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.cli.client import add_join
from desktop.cli.common import add_db_option, open_db


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``site policy init|show|check``."""
    site = commands.add_parser(
        "site",
        help="take part in federations as a site: join, the steward's policy and key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    areas = site.add_subparsers(dest="site_command", metavar="AREA", required=True)
    add_join(areas)
    policy = areas.add_parser(
        "policy",
        help="write, show or check the site policy file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="write a commented policy file with safe defaults")
    init.add_argument(
        "-o", "--out", metavar="FILE", default="site-policy.toml", help="file to write (default site-policy.toml)"
    )
    init.add_argument(
        "--allow-server",
        metavar="CA_PEM",
        action="append",
        default=[],
        help="a server's CA certificate (ca.pem) whose fingerprint to allow (repeat)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=run_init)
    show = actions.add_parser("show", help="print the effective policy (the defaults without a file)")
    show.add_argument("file", nargs="?", metavar="FILE", help="the policy file")
    show.set_defaults(func=run_show)
    check = actions.add_parser("check", help="validate a policy file: prints OK or what to fix")
    check.add_argument("file", metavar="FILE", help="the policy file")
    check.set_defaults(func=run_check)
    key = areas.add_parser(
        "key",
        help="show or rotate the steward's signing key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    key_actions = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("show", run_key_show, "the key's id, public key and file (made on first use)"),
        ("rotate", run_key_rotate, "replace the key; signatures by the old one stop verifying (revocation)"),
    ):
        action = key_actions.add_parser(name, help=text)
        action.add_argument("--steward-dir", metavar="DIR", help="where the key lives (default: the user config dir)")
        add_db_option(action)
        action.set_defaults(func=func)


def run_key_show(args: argparse.Namespace) -> int:
    """Print the steward key's id, public key and where it is kept."""
    from core.federated.app_trust import StewardKey

    steward = StewardKey(Path(args.steward_dir) if args.steward_dir else None).load_or_create()
    print(f"Steward key {steward.key_id}")
    print(f"  file: {steward.path} (readable by this user only)")
    print(f"  public: {steward.path.with_suffix('.pub').read_text(encoding='utf-8').strip()}")
    return 0


def run_key_rotate(args: argparse.Namespace) -> int:
    """Make a new steward key; audit the change."""
    from core.audit import kinds
    from core.audit.trail import record
    from core.federated.app_trust import StewardKey

    steward = StewardKey(Path(args.steward_dir) if args.steward_dir else None)
    previous = steward.load_or_create().key_id if steward.path.exists() else ""
    new = steward.rotate()
    db = open_db(args)
    try:
        record(db, kinds.POLICY_CHANGED, {"steward_key": new, "previous_steward_key": previous or None})
    finally:
        db.close()
    print(f"New steward key {new}; signatures by {previous or 'no earlier key'} no longer verify at this site.")
    print("Join again (`pneumofl site join ...`) to send the server the new signature.")
    return 0


def run_init(args: argparse.Namespace) -> int:
    """Write the template, listing the fingerprints of the given CA certificates."""
    from core.federated.policy import ca_fingerprint, format_fingerprint
    from core.federated.policy_template import write_policy_template

    fingerprints = [ca_fingerprint(pem) for pem in args.allow_server]
    path = write_policy_template(args.out, fingerprints, force=args.force)
    print(f"Site policy written to {path}; edit it, then check it with `pneumofl site policy check {path}`.")
    for pem, fingerprint in zip(args.allow_server, fingerprints):
        print(f"Allowed server CA {pem}: {format_fingerprint(fingerprint)}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the policy in effect as TOML, with its digest."""
    from core.federated.policy import default_policy, load_policy, policy_digest
    from core.federated.policy_template import policy_toml

    policy = load_policy(args.file) if args.file else default_policy()
    source = args.file if args.file else "the defaults (no policy file given)"
    print(f"# Site policy from {source}; SHA-256 {policy_digest(policy)}")
    print(policy_toml(policy), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Validate the file; a bad one ends with its sentence and exit code 2 (see ``desktop.cli.main``)."""
    from core.federated.policy import load_policy, policy_digest

    policy = load_policy(args.file)
    print(f"OK: {args.file} is a valid site policy (version {policy.policy_version}, SHA-256 {policy_digest(policy)}).")
    return 0
