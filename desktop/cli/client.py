"""Join a federation as a site: validate the local images, start the SuperNode, train when the server asks.

Examples
--------
  pneumofl site join --server fl.hospital.example:9092 --data ~/xrays --ca ca.pem --key north.key --name north
  pneumofl site join --server 127.0.0.1:9092 --data ~/xrays --insecure          # one-machine trials only
  pneumofl site join ... --policy site-policy.toml --approve-within-policy       # an unattended site

Only the model's weights and aggregate numbers leave this machine: never an image, a path or a patient
identifier. The site runs only PneumoFL's own federation app of its own version, signed by its data steward's
key (made on first join in the user config folder), and refuses any other app the server sends. Before the
first round of each federation run the plan is checked against the steward's policy (--policy; safe defaults
without it: `pneumofl site policy init` writes them) and, within it, put to you: on a terminal you are asked;
without one the plan is declined unless --approve-within-policy. Every round is recorded in this site's
database (one run linked to the federation) and in its audit trail (`pneumofl audit show`). Ctrl-C leaves.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from core.config import RunConfig
from core.federated.console import FederationConsole
from core.federated.settings import SiteSettings
from core.persistence import default_database_url
from desktop.cli.common import CommandError, add_db_option, open_db, stop_on_interrupt
from desktop.cli.live import run_with_live_events
from desktop.cli.serving import add_serve_options, parse_address

CONNECT_TIMEOUT_S = 120.0  # the SuperNode retries; past this the server is named unreachable


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``client join``: the old spelling of ``site join``, accepted for one release with a notice."""
    client = commands.add_parser("client", help="old spelling of `pneumofl site join` (accepted for one release)")
    actions = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    add_join(actions, renamed=True)


def add_join(actions: argparse._SubParsersAction, *, renamed: bool = False) -> None:
    """Add the ``join`` action (``pneumofl site join``; ``renamed``: the old ``client join``)."""
    p = actions.add_parser(
        "join",
        help="join a federation server as a site",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(renamed=renamed)
    p.add_argument("--server", metavar="HOST:PORT", required=True, help="the federation server's address")
    p.add_argument("--data", metavar="PATH", required=True, help="this site's labelled images (folder or CSV)")
    p.add_argument("--name", default=socket.gethostname(), help="this site's name as the server shows it")
    sec = p.add_mutually_exclusive_group()
    sec.add_argument("--ca", metavar="CA.pem", help="the federation's CA certificate (from the server's admin)")
    sec.add_argument("--insecure", action="store_true", help="no TLS: only for a server on 127.0.0.1")
    p.add_argument("--key", metavar="NODE_KEY", help="this site's private node key (nodes/<site>.key)")
    p.add_argument(
        "--policy", metavar="FILE", help="the data steward's policy (default: the safe defaults of `site policy init`)"
    )
    p.add_argument(
        "--approve-within-policy",
        action="store_true",
        help="approve every plan within the policy without asking (unattended sites)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for training (default: all)")
    p.add_argument("--work-dir", metavar="DIR", help="logs and Flower state (default: a folder in the user data dir)")
    add_serve_options(p)
    add_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate, start the SuperNode and stay until Ctrl-C (or until the SuperNode stops)."""
    if getattr(args, "renamed", False):
        print(
            "pneumofl: `pneumofl client join` is now `pneumofl site join`; the old spelling works until the next "
            "release.",
            file=sys.stderr,
        )
    from core.data.prepare import prepare_dataset
    from core.federated.nodes import SiteNode, fresh_work_dir, log_text
    from core.federated.processes import FlowerProcessError

    host, _port = parse_address(args.server)
    if args.insecure and host not in ("127.0.0.1", "localhost", "::1"):
        raise CommandError(f"--insecure is only for a server on 127.0.0.1, not {host}: ask for the CA file (--ca).")
    if not args.insecure and not args.ca:
        raise CommandError("Give the federation's CA certificate with --ca (or --insecure for a 127.0.0.1 trial).")
    for flag, value in (("--ca", args.ca), ("--key", args.key), ("--policy", args.policy)):
        if value and not Path(value).expanduser().is_file():
            raise CommandError(f"{flag} {value} does not exist.")
    # Resolved here: Flower's SuperNode runs in its own folder and reads these paths from there.
    ca = Path(args.ca).expanduser().resolve() if args.ca else None
    key = Path(args.key).expanduser().resolve() if args.key else None
    work_dir = Path(args.work_dir).expanduser().resolve() if args.work_dir else fresh_work_dir(f"site-{args.name}")
    site = SiteSettings(
        site_name=args.name,
        data_path=str(Path(args.data).expanduser().resolve()),
        db_url=args.db or default_database_url(),
        server_address=args.server,
        max_threads=args.threads,
        cache_dir=str(work_dir / "dataset-cache"),  # the first round reuses this check
        policy_file=str(Path(args.policy).expanduser().resolve()) if args.policy else "",
        approve_within_policy=args.approve_within_policy,
    )
    from core.federated.site_consent import site_policy

    site_policy(site)  # a bad policy file is a sentence now, not a declined plan later
    print("Checking this site's images...", file=sys.stderr)
    data = prepare_dataset(
        RunConfig(experiment_name=args.name, data_path=site.data_path), cache_dir=Path(site.cache_dir)
    )
    print(data.summary.format(), file=sys.stderr)
    open_db(args).close()
    leave = threading.Event()

    def work(env: dict[str, str]) -> int:
        node = SiteNode(
            site,
            args.server,
            work_dir,
            root_certificates=ca,
            private_key=key,
            extra_env=env,
            asker=ask_on_terminal if sys.stdin.isatty() else None,
            on_notice=lambda sentence: print(f"pneumofl: {sentence}", file=sys.stderr),
            on_decided=lambda record: print(
                f"{'Approved' if record.approved else 'Declined'} the plan of Flower run {record.flower_run_id} "
                f"from {args.server}: {record.reason}",
                file=sys.stderr,
            ),
        )
        try:
            node.start(wait=CONNECT_TIMEOUT_S, cancel=leave)
        except FlowerProcessError as exc:
            raise CommandError(str(exc), 1) from None
        if node.server_reply:
            print(node.server_reply, file=sys.stderr)
        try:
            print(f"Connecting to {args.server} as site '{args.name}'...", file=sys.stderr)
            try:
                node.wait_connected(timeout=CONNECT_TIMEOUT_S)
            except FlowerProcessError as exc:
                raise CommandError(str(exc), 1) from None
            print(
                f"Site '{args.name}' connected to {args.server}; training when the server asks (Ctrl-C leaves).",
                file=sys.stderr,
            )
            while node.alive() and not leave.is_set():
                time.sleep(0.5)
            if not node.alive() and node.process is not None:
                raise CommandError(
                    f"The SuperNode stopped. Its log ({node.process.log_path}) ends with:\n{log_text(node.process)}",
                    1,
                )
        finally:
            node.stop()
        return 0

    with stop_on_interrupt(leave, "Leaving the federation", (signal.SIGINT, signal.SIGTERM)):
        return run_with_live_events(args, work, [FederationConsole(sites=True).handle])


def ask_on_terminal(lines: list[str], plan_hash: str) -> str:
    """Show the plan and ask whether this site trains it (the consent screen, on a terminal)."""
    from core.federated.site_consent import APPROVE, APPROVE_WITHIN_POLICY, DECLINE

    print("\nThe server asks this site to train this plan:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    print(f"  Plan SHA-256: {plan_hash}", file=sys.stderr)
    answers = {"a": APPROVE, "d": DECLINE, "p": APPROVE_WITHIN_POLICY}
    while True:
        print("[a]pprove, [d]ecline, or approve plans within [p]olicy from now on? ", end="", file=sys.stderr)
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if not answer:  # end of input: nobody is there to approve
            return DECLINE
        if answer.strip().lower()[:1] in answers:
            return answers[answer.strip().lower()[:1]]
